// Package config resolves the settings of a qshield node from four
// sources with one precedence, highest first:
//
//  1. command-line flags (only those given explicitly),
//  2. environment variables (QSHIELD_…),
//  3. the configuration file (--config FILE or QSHIELD_CONFIG), JSON with
//     the keys below, unknown keys refused,
//  4. built-in defaults.
//
// Every setting has one key, one environment variable and one flag, listed
// by [Settings]; `qshield config check` prints the effective value of each
// with its source and validates them. Secrets (QSHIELD_CA_KEY,
// QSHIELD_PLATFORM_KEY, QSHIELD_AUDIT_KEY) are deliberately not settings:
// they come from the environment only, so that they never sit in a file
// that is copied around with the configuration.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is a node's resolved configuration.
type Config struct {
	DB           string `json:"db"`
	Listen       string `json:"listen"`
	StateDir     string `json:"state_dir"`
	InsecureHTTP bool   `json:"insecure_http"`

	LogLevel  string `json:"log_level"`  // debug, info, warn, error
	LogFormat string `json:"log_format"` // json or text

	DBMaxOpenConns     int           `json:"db_max_open_conns"`
	DBMaxIdleConns     int           `json:"db_max_idle_conns"`
	DBStatementTimeout time.Duration `json:"db_statement_timeout"`
	DBLockTimeout      time.Duration `json:"db_lock_timeout"`
	DBIdleInTxTimeout  time.Duration `json:"db_idle_in_tx_timeout"`
	DBConnectTimeout   time.Duration `json:"db_connect_timeout"`
	DBSQLiteMmapMiB    int           `json:"db_sqlite_mmap_mib"`

	HTTPMaxInFlight    int           `json:"http_max_in_flight"`
	HTTPMaxQueue       int           `json:"http_max_queue"`
	HTTPQueueTimeout   time.Duration `json:"http_queue_timeout"`
	HTTPRequestTimeout time.Duration `json:"http_request_timeout"`
	HTTPMaxConns       int           `json:"http_max_conns"`

	// Audit checkpoints: where each signed checkpoint goes.
	AuditCheckpointFile string `json:"audit_checkpoint_file"`
	AuditCheckpointURL  string `json:"audit_checkpoint_url"`
	AuditWitnessURL     string `json:"audit_witness_url"` // comma-separated VKEYFILE=URL
	AuditWitnessQuorum  int    `json:"audit_witness_quorum"`
	// WatermarkChallenges: scanner challenges for watermark codes (issue
	// 18): a claim pays only with stamps bound to the submitting scanner's
	// challenge, which the phone reads with its front camera (the browser
	// wallet does; the browser scanner page shows its challenge). On by
	// default; false is the opt-out, for phones without a usable front
	// camera (the platform's screen page, /watermark/screen/, reads the
	// challenge with it too; without one its codes are refused,
	// unbound_shares, while challenges are on).
	WatermarkChallenges bool `json:"watermark_challenges"`
}

// Defaults returns the built-in defaults.
func Defaults() Config {
	return Config{
		Listen: "127.0.0.1:8443", LogLevel: "info", LogFormat: "json",
		DBMaxOpenConns: 20, DBStatementTimeout: 15 * time.Second, DBLockTimeout: 10 * time.Second,
		DBIdleInTxTimeout: 30 * time.Second, DBConnectTimeout: 5 * time.Second,
		HTTPMaxInFlight: 256, HTTPQueueTimeout: 2 * time.Second, HTTPRequestTimeout: 20 * time.Second,
		HTTPMaxConns: 4096, WatermarkChallenges: true,
	}
}

// Setting describes one setting.
type Setting struct {
	Key  string // file key
	Env  string // environment variable
	Flag string // command-line flag
	Help string
	kind kind
	ptr  func(*Config) any
}

type kind int

const (
	kString kind = iota
	kBool
	kInt
	kDuration
)

// Settings lists every setting, in documentation order.
func Settings() []Setting {
	return []Setting{
		{"db", "QSHIELD_DB", "db", "database: SQLite file path or postgres:// URL (may hold a password: prefer the environment)", kString, func(c *Config) any { return &c.DB }},
		{"listen", "QSHIELD_LISTEN", "listen", "address the API listens on", kString, func(c *Config) any { return &c.Listen }},
		{"state_dir", "QSHIELD_STATE_DIR", "dir", "the server's directory: ca.pem and the operator's credentials", kString, func(c *Config) any { return &c.StateDir }},
		{"insecure_http", "QSHIELD_INSECURE_HTTP", "insecure-http", "serve plain HTTP (only behind a TLS-terminating proxy)", kBool, func(c *Config) any { return &c.InsecureHTTP }},
		{"log_level", "QSHIELD_LOG_LEVEL", "log-level", "debug, info, warn or error", kString, func(c *Config) any { return &c.LogLevel }},
		{"log_format", "QSHIELD_LOG_FORMAT", "log-format", "json (one object per line) or text", kString, func(c *Config) any { return &c.LogFormat }},
		{"db_max_open_conns", "QSHIELD_DB_MAX_OPEN_CONNS", "db-max-open-conns", "database connections per node (nodes × this < PostgreSQL max_connections)", kInt, func(c *Config) any { return &c.DBMaxOpenConns }},
		{"db_max_idle_conns", "QSHIELD_DB_MAX_IDLE_CONNS", "db-max-idle-conns", "idle connections kept (0: as many as open)", kInt, func(c *Config) any { return &c.DBMaxIdleConns }},
		{"db_statement_timeout", "QSHIELD_DB_STATEMENT_TIMEOUT", "db-statement-timeout", "PostgreSQL statement_timeout (negative: none)", kDuration, func(c *Config) any { return &c.DBStatementTimeout }},
		{"db_lock_timeout", "QSHIELD_DB_LOCK_TIMEOUT", "db-lock-timeout", "PostgreSQL lock_timeout (negative: none)", kDuration, func(c *Config) any { return &c.DBLockTimeout }},
		{"db_idle_in_tx_timeout", "QSHIELD_DB_IDLE_IN_TX_TIMEOUT", "db-idle-in-tx-timeout", "PostgreSQL idle_in_transaction_session_timeout (negative: none)", kDuration, func(c *Config) any { return &c.DBIdleInTxTimeout }},
		{"db_connect_timeout", "QSHIELD_DB_CONNECT_TIMEOUT", "db-connect-timeout", "timeout of each connection attempt", kDuration, func(c *Config) any { return &c.DBConnectTimeout }},
		{"db_sqlite_mmap_mib", "QSHIELD_DB_SQLITE_MMAP_MIB", "db-sqlite-mmap-mib", "MiB of an SQLite database file read through a memory map (0, the default: none; SQLite caps it at 2047)", kInt, func(c *Config) any { return &c.DBSQLiteMmapMiB }},
		{"http_max_in_flight", "QSHIELD_HTTP_MAX_IN_FLIGHT", "max-in-flight", "requests served at once by this node (negative: no cap)", kInt, func(c *Config) any { return &c.HTTPMaxInFlight }},
		{"http_max_queue", "QSHIELD_HTTP_MAX_QUEUE", "max-queue", "requests waiting for a slot (0: 4 × max-in-flight)", kInt, func(c *Config) any { return &c.HTTPMaxQueue }},
		{"http_queue_timeout", "QSHIELD_HTTP_QUEUE_TIMEOUT", "queue-timeout", "longest wait for a slot before 503", kDuration, func(c *Config) any { return &c.HTTPQueueTimeout }},
		{"http_request_timeout", "QSHIELD_HTTP_REQUEST_TIMEOUT", "request-timeout", "deadline of each request", kDuration, func(c *Config) any { return &c.HTTPRequestTimeout }},
		{"http_max_conns", "QSHIELD_HTTP_MAX_CONNS", "max-conns", "open connections per listener (negative: no cap)", kInt, func(c *Config) any { return &c.HTTPMaxConns }},
		{"audit_checkpoint_file", "QSHIELD_AUDIT_CHECKPOINT_FILE", "audit-checkpoint-file", "write every signed audit checkpoint to this file (put it outside the data directory)", kString, func(c *Config) any { return &c.AuditCheckpointFile }},
		{"audit_checkpoint_url", "QSHIELD_AUDIT_CHECKPOINT_URL", "audit-checkpoint-url", "POST every signed audit checkpoint to this URL (a log collector)", kString, func(c *Config) any { return &c.AuditCheckpointURL }},
		{"audit_witness_url", "QSHIELD_AUDIT_WITNESS_URL", "audit-witness-url", "comma-separated VKEYFILE=URL: push every audit checkpoint to these C2SP witnesses (URL = submission prefix, VKEYFILE = the witness's public key) and keep their cosignatures", kString, func(c *Config) any { return &c.AuditWitnessURL }},
		{"audit_witness_quorum", "QSHIELD_AUDIT_WITNESS_QUORUM", "audit-witness-quorum", "cosignatures each audit checkpoint needs; fewer is logged as an error", kInt, func(c *Config) any { return &c.AuditWitnessQuorum }},
		{"watermark_challenges", "QSHIELD_WATERMARK_CHALLENGES", "watermark-challenges", "watermark codes pay only with stamps bound to the submitting scanner's challenge (refuses a close video relayed to another scanner; false: codes shown by phones without a front camera or by the platform's screen page pay too)", kBool, func(c *Config) any { return &c.WatermarkChallenges }},
	}
}

// IsBool reports whether the setting is a boolean (its flag takes no value).
func (s Setting) IsBool() bool { return s.kind == kBool }

// Source says where a value came from.
type Source string

const (
	FromDefault Source = "default"
	FromFile    Source = "file"
	FromEnv     Source = "env"
	FromFlag    Source = "flag"
)

// Flags is what the resolver needs of a flag set: whether a flag was given
// and its text (cobra's *pflag.FlagSet satisfies it through [PFlags]).
type Flags interface {
	Changed(name string) bool
	Value(name string) (string, bool)
}

// Resolved is a configuration with the source of every value.
type Resolved struct {
	Config
	Sources map[string]Source // by key
	File    string            // the file read ("" if none)
}

// EnvConfig names the environment variable giving the configuration file.
const EnvConfig = "QSHIELD_CONFIG"

// Resolve applies defaults, then file (path, or $QSHIELD_CONFIG when path
// is ""), then the environment (getenv), then the explicitly given flags.
func Resolve(path string, getenv func(string) string, flags Flags) (*Resolved, error) {
	r := &Resolved{Config: Defaults(), Sources: map[string]Source{}}
	for _, s := range Settings() {
		r.Sources[s.Key] = FromDefault
	}
	if path == "" {
		path = getenv(EnvConfig)
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		keys, err := parseFile(b, &r.Config)
		if err != nil {
			return nil, fmt.Errorf("config: %s: %w", path, err)
		}
		for _, k := range keys {
			r.Sources[k] = FromFile
		}
		r.File = path
	}
	for _, s := range Settings() {
		if v := getenv(s.Env); v != "" {
			if err := set(s, &r.Config, v); err != nil {
				return nil, fmt.Errorf("config: %s: %w", s.Env, err)
			}
			r.Sources[s.Key] = FromEnv
		}
		if flags != nil && flags.Changed(s.Flag) {
			v, _ := flags.Value(s.Flag)
			if err := set(s, &r.Config, v); err != nil {
				return nil, fmt.Errorf("config: --%s: %w", s.Flag, err)
			}
			r.Sources[s.Key] = FromFlag
		}
	}
	return r, nil
}

// parseFile decodes a JSON object of settings into c and returns the keys
// it set. Durations are strings ("15s"); unknown keys and trailing data are
// errors, and c is unchanged on error.
func parseFile(b []byte, c *Config) ([]string, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON object")
	}
	next := *c
	var keys []string
	byKey := map[string]Setting{}
	for _, s := range Settings() {
		byKey[s.Key] = s
	}
	for k, v := range raw {
		s, ok := byKey[k]
		if !ok {
			return nil, fmt.Errorf("unknown setting %q", k)
		}
		var text string
		switch s.kind {
		case kString, kDuration:
			if err := json.Unmarshal(v, &text); err != nil {
				return nil, fmt.Errorf("%s: want a string: %w", k, err)
			}
		case kBool:
			var bv bool
			if err := json.Unmarshal(v, &bv); err != nil {
				return nil, fmt.Errorf("%s: want true or false: %w", k, err)
			}
			text = strconv.FormatBool(bv)
		case kInt:
			var n int
			if err := json.Unmarshal(v, &n); err != nil {
				return nil, fmt.Errorf("%s: want an integer: %w", k, err)
			}
			text = strconv.Itoa(n)
		}
		if err := set(s, &next, text); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	*c = next
	return keys, nil
}

func set(s Setting, c *Config, v string) error {
	switch p := s.ptr(c).(type) {
	case *string:
		*p = v
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", v)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 15s, 500ms)", v)
		}
		*p = d
	}
	return nil
}

// Value returns a setting's value as text.
func (c *Config) Value(s Setting) string {
	switch p := s.ptr(c).(type) {
	case *string:
		return *p
	case *bool:
		return strconv.FormatBool(*p)
	case *int:
		return strconv.Itoa(*p)
	case *time.Duration:
		return p.String()
	}
	return ""
}

// Validate checks the values on their own (no database access).
func (c *Config) Validate() error {
	var errs []error
	if _, err := c.Level(); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("log_format %q: want json or text", c.LogFormat))
	}
	if c.DBMaxOpenConns < 1 {
		errs = append(errs, fmt.Errorf("db_max_open_conns %d: want at least 1", c.DBMaxOpenConns))
	}
	if c.DBMaxIdleConns < 0 || c.DBMaxIdleConns > c.DBMaxOpenConns {
		errs = append(errs, fmt.Errorf("db_max_idle_conns %d: want 0 to db_max_open_conns", c.DBMaxIdleConns))
	}
	if c.DBConnectTimeout <= 0 {
		errs = append(errs, errors.New("db_connect_timeout must be positive"))
	}
	if c.DBSQLiteMmapMiB < 0 {
		errs = append(errs, fmt.Errorf("db_sqlite_mmap_mib %d: want 0 (no memory map) or more", c.DBSQLiteMmapMiB))
	}
	if c.HTTPQueueTimeout <= 0 || c.HTTPRequestTimeout <= 0 {
		errs = append(errs, errors.New("http_queue_timeout and http_request_timeout must be positive"))
	}
	if c.HTTPMaxInFlight == 0 {
		errs = append(errs, errors.New("http_max_in_flight 0 would refuse every request (negative: no cap)"))
	}
	if c.HTTPMaxQueue < 0 {
		errs = append(errs, errors.New("http_max_queue must not be negative"))
	}
	if c.HTTPMaxConns == 0 {
		errs = append(errs, errors.New("http_max_conns 0 would accept no connection (negative: no cap)"))
	}
	if c.HTTPMaxInFlight > 0 && c.HTTPMaxConns > 0 && c.HTTPMaxConns < c.HTTPMaxInFlight {
		errs = append(errs, fmt.Errorf("http_max_conns %d is below http_max_in_flight %d", c.HTTPMaxConns, c.HTTPMaxInFlight))
	}
	if c.DBStatementTimeout > 0 && c.HTTPRequestTimeout > 0 && c.DBStatementTimeout > c.HTTPRequestTimeout {
		errs = append(errs, fmt.Errorf("db_statement_timeout %v exceeds http_request_timeout %v: a statement would outlive its request", c.DBStatementTimeout, c.HTTPRequestTimeout))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("listen is empty"))
	}
	ws, err := c.AuditWitnesses()
	if err != nil {
		errs = append(errs, err)
	}
	if c.AuditWitnessQuorum < 0 || c.AuditWitnessQuorum > len(ws) {
		errs = append(errs, fmt.Errorf("audit_witness_quorum %d: want 0 to the %d witnesses of audit_witness_url", c.AuditWitnessQuorum, len(ws)))
	}
	return errors.Join(errs...)
}

// AuditWitness is one entry of audit_witness_url.
type AuditWitness struct {
	KeyFile string // the witness's public key file
	URL     string // its submission prefix (POST URL/add-checkpoint)
}

// AuditWitnesses parses AuditWitnessURL: comma-separated VKEYFILE=URL,
// each URL http or https.
func (c *Config) AuditWitnesses() ([]AuditWitness, error) {
	var out []AuditWitness
	for _, e := range strings.Split(c.AuditWitnessURL, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		k, u, ok := strings.Cut(e, "=")
		if !ok || k == "" || !(strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) {
			return nil, fmt.Errorf("audit_witness_url entry %q: want VKEYFILE=http(s)://URL", e)
		}
		out = append(out, AuditWitness{KeyFile: k, URL: u})
	}
	return out, nil
}

// Level parses LogLevel.
func (c *Config) Level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// Logger builds the node's logger writing to w.
func (c *Config) Logger(w io.Writer) (*slog.Logger, error) {
	l, err := c.Level()
	if err != nil {
		return nil, err
	}
	o := &slog.HandlerOptions{Level: l}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return slog.New(slog.NewJSONHandler(w, o)), nil
}
