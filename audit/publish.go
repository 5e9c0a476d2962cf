package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/fsutil"
)

// Sink receives every signed checkpoint the Publisher makes.
type Sink interface {
	Publish(ctx context.Context, checkpoint []byte) error
}

// FileSink writes the latest checkpoint to a file, atomically and durably.
// Put it outside the data directory (another disk, a mounted bucket) so that
// whoever restores or rewrites the database does not also hold it.
type FileSink struct{ Path string }

// Publish implements Sink.
func (s FileSink) Publish(_ context.Context, cp []byte) error {
	if err := fsutil.WriteFileAtomic(s.Path, cp, 0o644, true); err != nil {
		return fmt.Errorf("audit: checkpoint file sink: %w", err)
	}
	return nil
}

// HTTPSink POSTs every checkpoint (text/plain, the signed note) to URL,
// e.g. a witness or a log collector. A non-2xx answer is an error.
type HTTPSink struct {
	URL    string
	Client *http.Client // nil: a client with a 10 s timeout
}

// Publish implements Sink.
func (s HTTPSink) Publish(ctx context.Context, cp []byte) error {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(cp))
	if err != nil {
		return fmt.Errorf("audit: checkpoint HTTP sink: %w", err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("audit: checkpoint HTTP sink: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("audit: checkpoint HTTP sink %s: %s: %s", s.URL, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// Publisher integrates queued records and signs and publishes a checkpoint
// whenever Every records were added or Interval passed since the last one
// (and the log grew), but not more often than once per MinInterval: under
// load the log grows by Every records many times a second, and a checkpoint
// is a write transaction (competing with the business writer for SQLite's
// lock), a signature and a round trip to every witness, while what it
// proves does not need more than one a second.
type Publisher struct {
	Log    *Log
	Signer note.Signer
	// Every is the number of new records that triggers a checkpoint (default 1000).
	Every int64
	// Interval is the longest time between checkpoints of a growing log (default 10 s).
	Interval time.Duration
	// MinInterval is the shortest time between two checkpoints that Run
	// publishes (default 1 s; negative: none). PublishNow is not limited.
	MinInterval time.Duration
	// Poll is how often the queue is integrated (default 200 ms).
	Poll  time.Duration
	Sinks []Sink
	// Quorum is how many WitnessSinks must cosign each checkpoint; fewer
	// is logged at error level and returned as an error.
	Quorum int
	Logger *slog.Logger
}

// PublishNow signs a checkpoint of the current log and sends it to every
// sink — the WitnessSinks first, then the others with the cosigned
// checkpoint; a sink's failure is logged and returned after the others ran,
// as is a number of cosignatures below Quorum.
func (p *Publisher) PublishNow(ctx context.Context) ([]byte, Checkpoint, error) {
	msg, cp, err := p.Log.Checkpoint(ctx, p.Signer)
	if err != nil {
		return nil, Checkpoint{}, err
	}
	// Witnesses first, so that the other sinks get the checkpoint with
	// its cosignatures.
	var first error
	fail := func(err error) {
		p.logger().ErrorContext(ctx, "audit checkpoint not published", "size", cp.Size, "err", err)
		if first == nil {
			first = err
		}
	}
	cosigned, superseded := 0, false
	for _, s := range p.Sinks {
		if _, ok := s.(*WitnessSink); !ok {
			continue
		}
		if err := s.Publish(ctx, msg); errors.Is(err, ErrSuperseded) {
			superseded = true
		} else if err != nil {
			fail(err)
		} else {
			cosigned++
		}
	}
	if superseded && first == nil {
		// Nodes sharing the log publish independently; one that signed
		// before another's newer checkpoint reached a witness has nothing
		// to add, and its stale checkpoint must not replace the newer one
		// in the other sinks.
		p.logger().InfoContext(ctx, "audit checkpoint superseded by a newer one at a witness", "size", cp.Size)
		return msg, cp, nil
	}
	if cosigned < p.Quorum {
		err := fmt.Errorf("audit: checkpoint of %d records cosigned by %d witnesses, quorum %d", cp.Size, cosigned, p.Quorum)
		p.logger().ErrorContext(ctx, "audit checkpoint below witness quorum", "size", cp.Size, "cosigned", cosigned, "quorum", p.Quorum)
		if first == nil {
			first = err
		}
	}
	if cosigned > 0 {
		if m, err := p.Log.LatestCheckpoint(ctx); err == nil && m != nil {
			if c, perr := ParseStoredCheckpoint(m); perr == nil && c.Size == cp.Size {
				msg = m
			}
		}
	}
	for _, s := range p.Sinks {
		if _, ok := s.(*WitnessSink); ok {
			continue
		}
		if err := s.Publish(ctx, msg); err != nil {
			fail(err)
		}
	}
	return msg, cp, first
}

func (p *Publisher) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Run publishes until ctx ends. A refusal to sign (ErrFork, ErrRollback:
// the database no longer extends the last checkpoint) is logged at error
// level and retried at every interval; it never signs the other view.
func (p *Publisher) Run(ctx context.Context) error {
	every, interval, poll := p.Every, p.Interval, p.Poll
	if every <= 0 {
		every = 1000
	}
	if interval <= 0 {
		interval = 10 * time.Second
	}
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	minInterval := p.MinInterval
	if minInterval == 0 {
		minInterval = time.Second
	}
	var lastSize int64 = -1
	lastTime := time.Time{}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if _, err := p.Log.Integrate(ctx); err != nil && ctx.Err() == nil {
			p.logger().ErrorContext(ctx, "audit integrate failed", "err", err)
		}
		if head, err := p.Log.Head(ctx); err == nil {
			grown := head.Seq > lastSize
			// Due: never tried, Every records since the last checkpoint, or
			// Interval since the last checkpoint or failed attempt; and not
			// within MinInterval of the last.
			since := time.Since(lastTime)
			due := lastTime.IsZero() || (lastSize >= 0 && head.Seq-lastSize >= every || since >= interval) && since >= minInterval
			if grown && due {
				if _, cp, err := p.PublishNow(ctx); err != nil && ctx.Err() == nil {
					p.logger().ErrorContext(ctx, "audit checkpoint failed", "err", err)
					lastTime = time.Now() // retry after an interval
				} else if err == nil {
					lastSize, lastTime = cp.Size, time.Now()
					p.logger().DebugContext(ctx, "audit checkpoint", "size", cp.Size)
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// WitnessSink pushes every checkpoint to a C2SP tlog-witness (its
// add-checkpoint endpoint under URL, the witness's submission prefix) with
// a consistency proof from the size the witness holds, checks the
// cosignature it answers against Witness (the witness's public
// cosignature key) and stores it with the checkpoint in Log, so that GET
// /v1/audit/checkpoint serves the checkpoint with its cosignatures.
//
// The sink starts by offering old size 0; a witness holding more answers
// 409 with its size, and the sink retries once with a proof from there. A
// witness holding a larger tree than the checkpoint (the log was rolled
// back) or another root at the same size (a fork) is an error wrapping
// ErrRollback or ErrFork. Use one WitnessSink value per witness, by
// pointer: it remembers the witness's size.
type WitnessSink struct {
	URL     string
	Witness note.Verifier
	Log     *Log
	Client  *http.Client // nil: a client with a 10 s timeout
	size    atomic.Int64
}

// Publish implements Sink.
func (s *WitnessSink) Publish(ctx context.Context, msg []byte) error {
	cp, err := ParseStoredCheckpoint(msg)
	if err != nil {
		return fmt.Errorf("audit: witness %s: %w", s.URL, err)
	}
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	old := s.size.Load()
	for attempt := 0; ; attempt++ {
		if old > cp.Size {
			// Another node sharing this log may have pushed a newer
			// checkpoint after this one was signed. Only a log now
			// smaller than what the witness holds is a rollback.
			if t, err := s.Log.TreeHead(ctx); err == nil && t.Size >= old {
				return fmt.Errorf("audit: witness %s holds %d records, the checkpoint %d: %w", s.URL, old, cp.Size, ErrSuperseded)
			}
			return fmt.Errorf("audit: witness %s holds %d records, the checkpoint %d: %w", s.URL, old, cp.Size, ErrRollback)
		}
		var proof []tlog.Hash
		if old > 0 && old < cp.Size {
			if proof, err = s.Log.ProveConsistency(ctx, old, cp.Size); err != nil {
				return fmt.Errorf("audit: witness %s: %w", s.URL, err)
			}
		}
		body := AddCheckpointRequest{OldSize: old, Proof: proof, Checkpoint: msg}.Marshal()
		status, ctype, resp, err := post(ctx, c, strings.TrimRight(s.URL, "/")+"/add-checkpoint", body)
		if err != nil {
			return fmt.Errorf("audit: witness %s: %w", s.URL, err)
		}
		switch {
		case status == http.StatusOK:
			// Open the answer alone on the checkpoint text: an earlier
			// cosignature of the same key in msg would hide the new one.
			text, _, _ := bytes.Cut(msg, []byte("\n\n"))
			n, err := note.Open(append(append(bytes.Clone(text), "\n\n"...), resp...), note.VerifierList(s.Witness))
			if err != nil {
				return fmt.Errorf("audit: witness %s answered no valid cosignature: %w", s.URL, err)
			}
			var lines bytes.Buffer
			for _, sig := range n.Sigs {
				fmt.Fprintf(&lines, "— %s %s\n", sig.Name, sig.Base64)
			}
			if err := s.Log.AddCosignatures(ctx, cp.Size, lines.Bytes()); err != nil {
				return err
			}
			s.size.Store(cp.Size)
			return nil
		case status == http.StatusConflict && strings.HasPrefix(ctype, "text/x.tlog.size") && attempt == 0:
			held, err := strconv.ParseInt(strings.TrimSuffix(string(resp), "\n"), 10, 64)
			if err != nil || held < 0 {
				return fmt.Errorf("audit: witness %s: 409 with a bad size %q", s.URL, resp)
			}
			if held == old {
				return fmt.Errorf("audit: witness %s holds another tree of %d records: %w", s.URL, held, ErrFork)
			}
			old = held
		case status == http.StatusConflict && old == cp.Size:
			return fmt.Errorf("audit: witness %s holds another tree of %d records: %w", s.URL, old, ErrFork)
		default:
			return fmt.Errorf("audit: witness %s: HTTP %d: %s", s.URL, status, bytes.TrimSpace(resp))
		}
	}
}

// post sends body and returns the status, content type and (at most 64
// KiB of) the answer.
func post(ctx context.Context, c *http.Client, url string, body []byte) (int, string, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, "", nil, err
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b, nil
}
