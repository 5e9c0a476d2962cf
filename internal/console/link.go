package console

import (
	"context"
	"sync"
	"time"

	"github.com/qshield/qshield/kme"
)

// LinkSample is one observation of the QKD link for the live view.
type LinkSample struct {
	Time time.Time `json:"t"`
	// State is the link state the key managers report (up, aborted, down…).
	State string `json:"state"`
	// QBER is the last block's quantum bit error rate (−1 when unknown).
	QBER float64 `json:"qber"`
	// KeyRate is the secret key delivered per second since the last sample (bit/s).
	KeyRate float64 `json:"key_rate"`
	// PoolA and PoolB are the key units stored at each site's key manager.
	PoolA int `json:"pool_a"`
	PoolB int `json:"pool_b"`
	// Delivered counts keys handed to applications (both sites, running total).
	Delivered int64 `json:"delivered"`
	// Alarm is set when the link stopped on suspected eavesdropping.
	Alarm bool `json:"alarm"`
}

// LinkMonitor keeps a window of recent link samples. The platform feeds it
// each block's QBER (ObserveBlock) and Run samples the key managers.
type LinkMonitor struct {
	pair     *kme.Pair
	unitBits int
	mu       sync.Mutex
	qber     float64
	rate     float64 // last block's secret key rate (bit/s), -1: none yet
	ring     []LinkSample
	max      int
	subs     map[chan LinkSample]struct{}
}

// NewLinkMonitor watches pair (whose units are unitBits long) and keeps the
// last max samples.
func NewLinkMonitor(pair *kme.Pair, unitBits, max int) *LinkMonitor {
	if max <= 0 {
		max = 300
	}
	return &LinkMonitor{pair: pair, unitBits: unitBits, qber: -1, rate: -1, max: max, subs: map[chan LinkSample]struct{}{}}
}

// ObserveBlock records a finished block's QBER and secret key rate (bit/s;
// 0 for an aborted block).
func (m *LinkMonitor) ObserveBlock(qber, keyRate float64) {
	m.mu.Lock()
	m.qber, m.rate = qber, keyRate
	m.mu.Unlock()
}

// Run samples the key managers every period until ctx ends.
func (m *LinkMonitor) Run(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	var lastUnits int64
	last := time.Now()
	for {
		now := time.Now()
		s := LinkSample{Time: now.UTC(), QBER: -1}
		if m.pair != nil {
			ls := m.pair.A.Link()
			s.State = ls.State
			s.Alarm = ls.State == kme.LinkAborted
			ca, cb := m.pair.A.Counters(), m.pair.B.Counters()
			s.PoolA, s.PoolB = ca.StoredUnits, cb.StoredUnits
			s.Delivered = ca.DeliveredMaster + ca.DeliveredSlave + cb.DeliveredMaster + cb.DeliveredSlave
			if lastUnits > 0 || ca.DepositedUnits > 0 {
				if dt := now.Sub(last).Seconds(); dt > 0 && ca.DepositedUnits >= lastUnits {
					s.KeyRate = float64(ca.DepositedUnits-lastUnits) * float64(m.unitBits) / dt
				}
			}
			lastUnits = ca.DepositedUnits
		}
		last = now
		m.mu.Lock()
		s.QBER = m.qber
		if m.rate >= 0 {
			s.KeyRate = m.rate // the link's own figure beats one derived from deposits
		}
		m.ring = append(m.ring, s)
		if len(m.ring) > m.max {
			m.ring = m.ring[len(m.ring)-m.max:]
		}
		for ch := range m.subs {
			select {
			case ch <- s:
			default: // a slow viewer misses a sample, never blocks the monitor
			}
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Samples returns the window, oldest first.
func (m *LinkMonitor) Samples() []LinkSample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]LinkSample(nil), m.ring...)
}

func (m *LinkMonitor) subscribe() (chan LinkSample, func()) {
	ch := make(chan LinkSample, 8)
	m.mu.Lock()
	m.subs[ch] = struct{}{}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		delete(m.subs, ch)
		m.mu.Unlock()
	}
}
