// Package pgha starts a highly available PostgreSQL on one machine for tests
// and experiments: a single-node etcd and two PostgreSQL instances managed by
// Patroni in synchronous mode (Debian's patroni, etcd-server and
// postgresql-15 packages), on ports of its own. It never touches the
// machine's PostgreSQL on 5432.
//
// Synchronous mode (not strict): the primary acknowledges a commit only once
// the synchronous standby has its WAL, so a failover loses no acknowledged
// transaction; when the standby is gone the primary goes on alone after the
// leader lease (not strict, so that losing one of two nodes does not stop the
// platform). A crash of the primary's machine is simulated by SIGKILLing its
// Patroni and its postmaster together; Patroni on the standby then takes the
// leader lock once the lease (TTL) runs out and promotes it.
package pgha

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Timing of the cluster (Patroni's dcs settings). TTL is the leader lease:
// a crashed primary is replaced after about TTL.
const (
	TTL          = 10
	LoopWait     = 2
	RetryTimeout = 4
)

// EnvCluster enables the tests that start a cluster (they need
// postgresql-15, patroni and etcd-server installed; .ci/run installs them).
const EnvCluster = "QSHIELD_TEST_CLUSTER"

// Cluster is a running etcd and two Patroni-managed PostgreSQL nodes.
type Cluster struct {
	dir   string
	etcd  *exec.Cmd
	nodes []*Node
	log   io.Writer
	// Password is the superuser's password.
	Password string
}

// Node is one Patroni-managed PostgreSQL instance.
type Node struct {
	Name     string
	Port     int // PostgreSQL
	RESTPort int // Patroni REST API
	DataDir  string
	conf     string
	cmd      *exec.Cmd
}

// Missing reports which programs the cluster needs that are not installed
// ("" when none are missing).
func Missing() string {
	var miss []string
	for _, p := range []string{"etcd", "patroni", "runuser", "/usr/lib/postgresql/15/bin/postgres"} {
		if _, err := exec.LookPath(p); err != nil {
			miss = append(miss, p)
		}
	}
	return strings.Join(miss, ", ")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start starts etcd and two nodes under a new directory in the postgres
// user's reach and waits until one of them is primary with a synchronous
// standby. Output of the processes goes to logw (nil: discarded).
func Start(ctx context.Context, logw io.Writer) (_ *Cluster, err error) {
	if m := Missing(); m != "" {
		return nil, fmt.Errorf("pgha: not installed: %s (apt-get install postgresql-15 patroni etcd-server etcd-client)", m)
	}
	if logw == nil {
		logw = io.Discard
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgha: the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	dir, err := os.MkdirTemp("", "qshield-pgha-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, log: logw, Password: "qshield-ha-test"}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	clientPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.etcd = exec.Command("etcd", "--name", "etcd0", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "etcd0="+peerURL)
	c.etcd.Stdout, c.etcd.Stderr = logw, logw
	c.etcd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.etcd.Start(); err != nil {
		return nil, fmt.Errorf("pgha: start etcd: %w", err)
	}
	if err := waitHTTP(ctx, etcdURL+"/health", 30*time.Second); err != nil {
		return nil, fmt.Errorf("pgha: etcd did not become healthy: %w", err)
	}
	for i := 1; i <= 2; i++ {
		n := &Node{Name: fmt.Sprintf("pg%d", i)}
		if n.Port, err = freePort(); err != nil {
			return nil, err
		}
		if n.RESTPort, err = freePort(); err != nil {
			return nil, err
		}
		home := filepath.Join(dir, n.Name)
		if err := os.MkdirAll(home, 0o700); err != nil {
			return nil, err
		}
		n.DataDir = filepath.Join(home, "data")
		n.conf = filepath.Join(home, "patroni.yml")
		if err := os.WriteFile(n.conf, []byte(c.patroniYAML(n, home, clientPort)), 0o600); err != nil {
			return nil, err
		}
		if err := chownR(home, uid, gid); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		if err := c.startNode(n); err != nil {
			return nil, err
		}
	}
	if _, err := c.WaitPrimary(ctx, 120*time.Second); err != nil {
		return nil, err
	}
	if err := c.waitSync(ctx, 120*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) patroniYAML(n *Node, home string, etcdPort int) string {
	return fmt.Sprintf(`scope: qshield-ha
name: %[1]s
restapi: {listen: 127.0.0.1:%[2]d, connect_address: 127.0.0.1:%[2]d}
etcd3: {hosts: 127.0.0.1:%[3]d}
bootstrap:
  dcs:
    ttl: %[4]d
    loop_wait: %[5]d
    retry_timeout: %[6]d
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      parameters: {synchronous_commit: "on", wal_log_hints: "on", max_connections: 200, shared_buffers: 64MB, fsync: "on"}
  initdb: [{encoding: UTF8}, data-checksums]
postgresql:
  listen: 127.0.0.1:%[7]d
  connect_address: 127.0.0.1:%[7]d
  data_dir: %[8]s
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: %[9]s
  authentication:
    superuser: {username: postgres, password: %[10]s}
    replication: {username: replicator, password: repl-secret}
    rewind: {username: rewinder, password: rw-secret}
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
`, n.Name, n.RESTPort, etcdPort, TTL, LoopWait, RetryTimeout, n.Port, n.DataDir, filepath.Join(home, "pgpass"), c.Password)
}

func (c *Cluster) startNode(n *Node) error {
	n.cmd = exec.Command("runuser", "-u", "postgres", "--", "patroni", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = c.log, c.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("pgha: start patroni %s: %w", n.Name, err)
	}
	go n.cmd.Wait()
	return nil
}

// DSN is a pgx connection string naming both nodes: connections go to the
// one that accepts writes (target_session_attrs=read-write).
func (c *Cluster) DSN(db string) string {
	var hosts []string
	for _, n := range c.nodes {
		hosts = append(hosts, fmt.Sprintf("127.0.0.1:%d", n.Port))
	}
	return fmt.Sprintf("postgres://postgres:%s@%s/%s?sslmode=disable&target_session_attrs=read-write&connect_timeout=3", c.Password, strings.Join(hosts, ","), db)
}

// Nodes returns the nodes.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Primary returns the node that answers 200 on Patroni's /primary, or nil.
func (c *Cluster) Primary() *Node {
	for _, n := range c.nodes {
		if n.cmd != nil && status(fmt.Sprintf("http://127.0.0.1:%d/primary", n.RESTPort)) == http.StatusOK {
			return n
		}
	}
	return nil
}

// WaitPrimary waits until a node is primary.
func (c *Cluster) WaitPrimary(ctx context.Context, d time.Duration) (*Node, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p := c.Primary(); p != nil {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, errors.New("pgha: no primary within " + d.String())
}

func (c *Cluster) waitSync(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, n := range c.nodes {
			if n.cmd != nil && status(fmt.Sprintf("http://127.0.0.1:%d/sync", n.RESTPort)) == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("pgha: no synchronous standby within " + d.String())
}

// Crash kills a node's Patroni and PostgreSQL at once (SIGKILL), as a
// machine crash would.
func (c *Cluster) Crash(n *Node) error {
	if n.cmd == nil {
		return errors.New("pgha: node not running")
	}
	pid := postmasterPID(n.DataDir)
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		// The postmaster's children (backends, walsender) go with it.
		_ = exec.Command("pkill", "-KILL", "-P", strconv.Itoa(pid)).Run()
	}
	n.cmd = nil
	return nil
}

// Restart starts a crashed node again (it rejoins as a standby, rewound if
// needed).
func (c *Cluster) Restart(n *Node) error {
	os.Remove(filepath.Join(n.DataDir, "postmaster.pid"))
	return c.startNode(n)
}

// Stop stops everything and removes the cluster's directory.
func (c *Cluster) Stop() {
	for _, n := range c.nodes {
		if n.cmd != nil {
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, n := range c.nodes {
		if n.cmd != nil {
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		}
		if pid := postmasterPID(n.DataDir); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_ = exec.Command("pkill", "-KILL", "-P", strconv.Itoa(pid)).Run()
		}
	}
	if c.etcd != nil && c.etcd.Process != nil {
		_ = syscall.Kill(-c.etcd.Process.Pid, syscall.SIGKILL)
		_ = c.etcd.Wait()
	}
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

func status(url string) int {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitHTTP(ctx context.Context, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if status(url) == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("timed out")
}

func chownR(root string, uid, gid int) error {
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
