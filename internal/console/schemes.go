package console

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/qshield/qshield/audit"
)

// Per-scheme time series for the live charts: payments per second,
// refusals and amounts of each scheme over the last SeriesWindow, in
// SeriesBucket steps. They are read from the audit trail, which already
// holds every payment and refusal of every scheme (the same records the
// dashboard counts): the console tails it from where it left off, so each
// record is read once. A payment's amount is the one its ledger record
// states (events "ledger.*" carry transfer_id, amount and currency, written
// in the same transaction as the scheme's record, which names the transfer).

// Series settings.
const (
	SeriesBucket = 10 * time.Second
	SeriesWindow = 15 * time.Minute
	seriesN      = int(SeriesWindow / SeriesBucket)
	tailPage     = 5000
	tailBackfill = 20000 // records read back at start
)

// chartSchemes are the schemes charted (the ledger API's own transfers are not a scheme).
var chartSchemes = schemeEvents[:5]

type seriesPoint struct {
	Paid, Failed int64
	Amount       int64 // minor units of the scheme's currency
}

type schemeSeries struct {
	Name     string
	Currency string
	Points   [seriesN]seriesPoint
}

// seriesTail is the console's running view of the schemes.
type seriesTail struct {
	mu      sync.Mutex
	started bool
	after   int64
	start   time.Time // start of bucket 0
	schemes []*schemeSeries
	// a payment's scheme record and its ledger record arrive in either
	// order; each waits here (bounded) for the other.
	waitAmount map[string]pendingPay // transfer → scheme record
	waitScheme map[string]amountOf   // transfer → ledger amount
}

type pendingPay struct {
	scheme int
	at     time.Time
}

type amountOf struct {
	minor    int64
	currency string
	at       time.Time
}

func newSeriesTail() *seriesTail {
	t := &seriesTail{waitAmount: map[string]pendingPay{}, waitScheme: map[string]amountOf{}}
	for _, s := range chartSchemes {
		t.schemes = append(t.schemes, &schemeSeries{Name: s.scheme})
	}
	return t
}

// advance moves the window so that now falls in its last bucket.
func (t *seriesTail) advance(now time.Time) {
	end := now.Truncate(SeriesBucket).Add(SeriesBucket)
	newStart := end.Add(-SeriesWindow)
	if t.start.IsZero() {
		t.start = newStart
		return
	}
	shift := int(newStart.Sub(t.start) / SeriesBucket)
	if shift <= 0 {
		return
	}
	for _, s := range t.schemes {
		if shift >= seriesN {
			s.Points = [seriesN]seriesPoint{}
			continue
		}
		copy(s.Points[:], s.Points[shift:])
		for i := seriesN - shift; i < seriesN; i++ {
			s.Points[i] = seriesPoint{}
		}
	}
	t.start = newStart
	// Waiting halves older than the window will never be charted.
	for k, v := range t.waitAmount {
		if v.at.Before(newStart) {
			delete(t.waitAmount, k)
		}
	}
	for k, v := range t.waitScheme {
		if v.at.Before(newStart) {
			delete(t.waitScheme, k)
		}
	}
}

func (t *seriesTail) bucket(at time.Time) int {
	if at.Before(t.start) {
		return -1
	}
	i := int(at.Sub(t.start) / SeriesBucket)
	if i >= seriesN {
		i = seriesN - 1 // a record stamped a little ahead of this clock
	}
	return i
}

func (t *seriesTail) addAmount(scheme int, at time.Time, a amountOf) {
	s := t.schemes[scheme]
	if s.Currency == "" {
		s.Currency = a.currency
	}
	if s.Currency != a.currency {
		return // one currency per chart: the first seen
	}
	if i := t.bucket(at); i >= 0 {
		s.Points[i].Amount += a.minor
	}
}

// take adds one audit record to the series.
func (t *seriesTail) take(r audit.Record) {
	if tr := r.Details["transfer_id"]; tr != "" && r.Origin == "ledger" {
		minor, err := strconv.ParseInt(r.Details["amount"], 10, 64)
		if err != nil {
			return
		}
		a := amountOf{minor: minor, currency: r.Details["currency"], at: r.Time}
		if p, ok := t.waitAmount[tr]; ok {
			delete(t.waitAmount, tr)
			t.addAmount(p.scheme, p.at, a)
		} else if len(t.waitScheme) < 100000 {
			t.waitScheme[tr] = a
		}
		return
	}
	for i, se := range chartSchemes {
		if !matchesEvent(r.Event, se.events) {
			continue
		}
		b := t.bucket(r.Time)
		if b < 0 {
			return
		}
		if r.Outcome == audit.OutcomeSuccess {
			t.schemes[i].Points[b].Paid++
			if tr := r.Details["transfer"]; tr != "" {
				if a, ok := t.waitScheme[tr]; ok {
					delete(t.waitScheme, tr)
					t.addAmount(i, r.Time, a)
				} else if len(t.waitAmount) < 100000 {
					t.waitAmount[tr] = pendingPay{scheme: i, at: r.Time}
				}
			}
		} else {
			t.schemes[i].Points[b].Failed++
		}
		return
	}
}

// poll reads the records appended since the last poll.
func (c *Console) pollSeries(ctx context.Context) error {
	t := c.series
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advance(c.cfg.Now())
	if !t.started {
		h, err := c.cfg.Audit.Head(ctx)
		if err != nil {
			return err
		}
		t.after = max(0, h.Seq-tailBackfill)
		t.started = true
	}
	for range 20 { // at most 100,000 records a poll
		recs, err := c.cfg.Audit.Search(ctx, audit.Query{AfterSeq: t.after, Limit: tailPage})
		if err != nil {
			return err
		}
		for _, r := range recs {
			t.take(r)
			t.after = r.Seq
		}
		if len(recs) < tailPage {
			break
		}
	}
	return nil
}

// seriesJSON is what the charts get: per scheme, per bucket, already in
// the units shown (payments per second, refusals per bucket, major units).
type seriesJSON struct {
	Bucket  int            `json:"bucket_s"`
	End     string         `json:"end"`
	Schemes []schemeJSONed `json:"schemes"`
}

type schemeJSONed struct {
	Name     string    `json:"name"`
	Currency string    `json:"currency"`
	Rate     []float64 `json:"rate"`
	Failed   []int64   `json:"failed"`
	Amount   []float64 `json:"amount"`
	Paid     int64     `json:"paid"`
	Refused  int64     `json:"refused"`
	Total    string    `json:"total"`
}

func (c *Console) seriesSnapshot() seriesJSON {
	t := c.series
	t.mu.Lock()
	defer t.mu.Unlock()
	out := seriesJSON{Bucket: int(SeriesBucket / time.Second), End: t.start.Add(SeriesWindow).UTC().Format("15:04:05")}
	for _, s := range t.schemes {
		j := schemeJSONed{Name: s.Name, Currency: s.Currency}
		var sum int64
		for _, p := range s.Points {
			j.Rate = append(j.Rate, float64(p.Paid)/SeriesBucket.Seconds())
			j.Failed = append(j.Failed, p.Failed)
			j.Amount = append(j.Amount, majorUnits(p.Amount, s.Currency))
			j.Paid += p.Paid
			j.Refused += p.Failed
			sum += p.Amount
		}
		if s.Currency != "" {
			j.Total = formatMoney(sum, s.Currency)
		}
		out.Schemes = append(out.Schemes, j)
	}
	return out
}

// Run keeps the console's background views current until ctx ends: the
// per-scheme series and the checkpoint history (every period).
func (c *Console) Run(ctx context.Context, period time.Duration) {
	tk := time.NewTicker(period)
	defer tk.Stop()
	for {
		if err := c.pollSeries(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Log.Warn("console: scheme series", "err", err)
		}
		if err := c.observeCheckpoint(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Log.Warn("console: observe checkpoint", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}
