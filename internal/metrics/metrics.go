// Package metrics is qshield's Prometheus instrumentation: one registry per
// process (no global state), the collectors the HTTP front, the schemes, the
// QKD link, the key managers, the database pool and leader election report
// into, and the /metrics handler.
//
// Series (all prefixed qshield_):
//
//	http_requests_total{route,method,code}          requests by mux pattern and status
//	http_request_duration_seconds{route}            latency histogram
//	http_in_flight                                  requests being served
//	http_shed_total{reason}                         requests refused by load shedding
//	scheme_requests_total{scheme,route,outcome,reason}
//	                                                POSTs of each scheme (and the ledger API):
//	                                                outcome ok / refused (4xx) / failed (5xx),
//	                                                reason = the problem code
//	ledger_transfers_recorded                       highest transfer sequence number
//	qkd_blocks_total{result}                        QKD blocks, ok or aborted
//	qkd_qber, qkd_key_rate_bps, qkd_secret_bits_total
//	qkd_link_up{kme}, qkd_link_state{kme,state}     link health as each KME sees it
//	kme_pool_fill_ratio{kme}, kme_pool_units{kme}   key pool fill
//	kme_keys_delivered_total{kme,role}              keys handed to master / slave SAEs
//	kme_units_deposited_total{kme}, kme_units_dropped_total{kme}
//	leader{duty}                                    1 while this node holds the duty's lease
//	go_sql_* (db="qshield")                         database/sql pool statistics
package metrics

import (
	"context"
	"database/sql"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/qkd"
)

// Metrics holds a registry and qshield's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	httpRequests   *prometheus.CounterVec
	httpDuration   *prometheus.HistogramVec
	httpInFlight   prometheus.Gauge
	shed           *prometheus.CounterVec
	schemeRequests *prometheus.CounterVec
	qkdBlocks      *prometheus.CounterVec
	qkdQBER        prometheus.Gauge
	qkdRate        prometheus.Gauge
	qkdBits        prometheus.Counter
	leader         *prometheus.GaugeVec

	mu   sync.Mutex
	kmes []*kme.KME
}

// New returns a registry with the Go runtime and process collectors and
// qshield's series.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qshield_http_requests_total", Help: "HTTP requests by route (mux pattern), method and status code.",
	}, []string{"route", "method", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "qshield_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route"})
	m.httpInFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "qshield_http_in_flight", Help: "HTTP requests being served."})
	m.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qshield_http_shed_total", Help: "Requests refused by load shedding (queue_full, queue_timeout).",
	}, []string{"reason"})
	m.schemeRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qshield_scheme_requests_total", Help: "POST requests of each scheme and of the ledger API by outcome (ok, refused, failed) and refusal reason (problem code).",
	}, []string{"scheme", "route", "outcome", "reason"})
	m.qkdBlocks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qshield_qkd_blocks_total", Help: "QKD blocks processed, by result (ok, aborted).",
	}, []string{"result"})
	m.qkdQBER = prometheus.NewGauge(prometheus.GaugeOpts{Name: "qshield_qkd_qber", Help: "Quantum bit error rate of the last QKD block (sampled estimate when the block aborted)."})
	m.qkdRate = prometheus.NewGauge(prometheus.GaugeOpts{Name: "qshield_qkd_key_rate_bps", Help: "Secret key rate of the last QKD block, bits per second of source time."})
	m.qkdBits = prometheus.NewCounter(prometheus.CounterOpts{Name: "qshield_qkd_secret_bits_total", Help: "Secret bits distilled by the QKD link."})
	m.leader = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "qshield_leader", Help: "1 while this node holds the lease of a singleton duty.",
	}, []string{"duty"})
	m.Registry.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.httpRequests, m.httpDuration, m.httpInFlight, m.shed, m.schemeRequests,
		m.qkdBlocks, m.qkdQBER, m.qkdRate, m.qkdBits, m.leader, kmeCollector{m},
	)
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// InFlight adds d to the in-flight gauge.
func (m *Metrics) InFlight(d float64) { m.httpInFlight.Add(d) }

// Shed counts a request refused by load shedding.
func (m *Metrics) Shed(reason string) { m.shed.WithLabelValues(reason).Inc() }

// ObserveHTTP records one finished request. route is the mux pattern
// without its method ("" for unmatched requests); problem is the problem
// code of an error response.
func (m *Metrics) ObserveHTTP(route, method string, status int, problem string, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "other"
	}
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(d.Seconds())
	if method != http.MethodPost {
		return
	}
	scheme := SchemeOf(route)
	if scheme == "" {
		return
	}
	outcome := "ok"
	switch {
	case status >= 500:
		outcome = "failed"
	case status >= 400:
		outcome = "refused"
	}
	m.schemeRequests.WithLabelValues(scheme, route, outcome, problem).Inc()
}

// SchemeOf names the scheme a route belongs to ("" for none): qmsp (seed
// 000), keycharge (001), selfverify (002), watermark (003), bioqr (004), or
// ledger for the ledger API.
func SchemeOf(route string) string {
	p := strings.TrimPrefix(route, "/v1/")
	if p == route {
		return ""
	}
	name, _, _ := strings.Cut(p, "/")
	switch name {
	case "qmsp", "keycharge", "selfverify", "watermark", "bioqr":
		return name
	case "transfers", "accounts":
		return "ledger"
	}
	return ""
}

// QKDBlock records one QKD block's statistics (link.Config.OnBlock).
func (m *Metrics) QKDBlock(st qkd.Stats) {
	if st.Aborted || st.AbortedBlocks > 0 {
		m.qkdBlocks.WithLabelValues("aborted").Inc()
		m.qkdQBER.Set(st.SampledQBER)
		m.qkdRate.Set(0)
		return
	}
	m.qkdBlocks.WithLabelValues("ok").Inc()
	m.qkdQBER.Set(st.QBER)
	m.qkdRate.Set(st.KeyRateBps)
	m.qkdBits.Add(float64(st.FinalBits))
}

// SetLeader reports whether this node holds duty's lease.
func (m *Metrics) SetLeader(duty string, held bool) {
	v := 0.0
	if held {
		v = 1
	}
	m.leader.WithLabelValues(duty).Set(v)
}

// AddKME reports a key manager's pool, deliveries and link state.
func (m *Metrics) AddKME(k *kme.KME) {
	m.mu.Lock()
	m.kmes = append(m.kmes, k)
	m.mu.Unlock()
}

// AddDB reports db's connection pool (go_sql_* series with db="qshield").
func (m *Metrics) AddDB(db *sql.DB) {
	m.Registry.MustRegister(collectors.NewDBStatsCollector(db, "qshield"))
}

// AddLedger reports the highest transfer sequence number of the ledger in
// db (one indexed query per scrape, bounded to a second).
func (m *Metrics) AddLedger(db *sql.DB) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "qshield_ledger_transfers_recorded", Help: "Highest ledger transfer sequence number (transfers recorded since the ledger was created); -1 when the database did not answer.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var n sql.NullInt64
		if err := db.QueryRowContext(ctx, `SELECT MAX(seq) FROM ledger_transfers`).Scan(&n); err != nil {
			return -1
		}
		return float64(n.Int64)
	}))
}

var (
	descLinkUp    = prometheus.NewDesc("qshield_qkd_link_up", "1 when the QKD link feeding this KME is up.", []string{"kme"}, nil)
	descLinkState = prometheus.NewDesc("qshield_qkd_link_state", "QKD link state as the KME records it (1 for the current state).", []string{"kme", "state"}, nil)
	descFill      = prometheus.NewDesc("qshield_kme_pool_fill_ratio", "Stored key units over the pool's capacity.", []string{"kme"}, nil)
	descUnits     = prometheus.NewDesc("qshield_kme_pool_units", "Key units stored in the pool.", []string{"kme"}, nil)
	descDelivered = prometheus.NewDesc("qshield_kme_keys_delivered_total", "Keys delivered to SAEs, by role (master, slave).", []string{"kme", "role"}, nil)
	descDeposited = prometheus.NewDesc("qshield_kme_units_deposited_total", "Key units deposited by the QKD link.", []string{"kme"}, nil)
	descDropped   = prometheus.NewDesc("qshield_kme_units_dropped_total", "Key units dropped because the pool was full.", []string{"kme"}, nil)
)

type kmeCollector struct{ m *Metrics }

func (c kmeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinkUp, descLinkState, descFill, descUnits, descDelivered, descDeposited, descDropped} {
		ch <- d
	}
}

func (c kmeCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	ks := append([]*kme.KME(nil), c.m.kmes...)
	c.m.mu.Unlock()
	for _, k := range ks {
		id := k.ID()
		ls := k.Link()
		up := 0.0
		if ls.State == kme.LinkUp {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descLinkUp, prometheus.GaugeValue, up, id)
		for _, s := range []string{kme.LinkUnknown, kme.LinkUp, kme.LinkAborted, kme.LinkDown} {
			v := 0.0
			if ls.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descLinkState, prometheus.GaugeValue, v, id, s)
		}
		cn := k.Counters()
		if max := k.Config().MaxKeyCount; max > 0 {
			ch <- prometheus.MustNewConstMetric(descFill, prometheus.GaugeValue, float64(cn.StoredUnits)/float64(max), id)
		}
		ch <- prometheus.MustNewConstMetric(descUnits, prometheus.GaugeValue, float64(cn.StoredUnits), id)
		ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(cn.DeliveredMaster), id, "master")
		ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(cn.DeliveredSlave), id, "slave")
		ch <- prometheus.MustNewConstMetric(descDeposited, prometheus.CounterValue, float64(cn.DepositedUnits), id)
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(cn.DroppedUnits), id)
	}
}
