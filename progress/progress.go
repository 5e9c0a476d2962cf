// Package progress reports the progress of long work: a redrawn bar when the
// output is a terminal, a plain line every few seconds otherwise, nothing when
// the factory is nil or quiet.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Factory creates reporters that write to one stream.
type Factory struct {
	w     io.Writer
	tty   bool
	quiet bool
	every time.Duration
}

// New returns a factory writing to w; a bar is drawn when w is a terminal.
func New(w io.Writer, quiet bool) *Factory {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &Factory{w: w, tty: tty, quiet: quiet, every: 2 * time.Second}
}

// Reporter tracks one task of known total size.
type Reporter struct {
	f     *Factory
	label string
	total int64
	unit  string

	mu      sync.Mutex
	done    int64
	start   time.Time
	lastOut time.Time
}

// Start begins a task of total units (unit is printed, e.g. "MB" or "trials").
// It is safe to call on a nil Factory; the reporter then prints nothing.
func (f *Factory) Start(label string, total int64, unit string) *Reporter {
	return &Reporter{f: f, label: label, total: total, unit: unit, start: time.Now()}
}

// Add records n more units done.
func (r *Reporter) Add(n int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done += n
	if r.f == nil || r.f.quiet {
		return
	}
	now := time.Now()
	interval := r.f.every
	if r.f.tty {
		interval = 100 * time.Millisecond
	}
	if now.Sub(r.lastOut) < interval && r.done < r.total {
		return
	}
	r.lastOut = now
	r.print(now, false)
}

// Done finishes the task and prints a final line.
func (r *Reporter) Done() {
	if r == nil || r.f == nil || r.f.quiet {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.print(time.Now(), true)
}

func (r *Reporter) print(now time.Time, final bool) {
	frac := 0.0
	if r.total > 0 {
		frac = float64(r.done) / float64(r.total)
		if frac > 1 {
			frac = 1
		}
	}
	el := now.Sub(r.start).Round(100 * time.Millisecond)
	if r.f.tty {
		const width = 30
		n := int(frac * width)
		bar := strings.Repeat("█", n) + strings.Repeat("░", width-n)
		fmt.Fprintf(r.f.w, "\r%s %s %3.0f%% %d/%d %s %s", r.label, bar, frac*100, r.done, r.total, r.unit, el)
		if final {
			fmt.Fprintln(r.f.w)
		}
		return
	}
	fmt.Fprintf(r.f.w, "%s: %d/%d %s (%.0f%%) %s\n", r.label, r.done, r.total, r.unit, frac*100, el)
}
