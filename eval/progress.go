package eval

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Bar draws a one-line progress bar with throughput and ETA on a terminal,
// redrawing in place with a carriage return. Use it only when w is a
// terminal; elsewhere stay quiet and print Report.Summary at the end.
type Bar struct {
	w     io.Writer
	width int // cells of the bar itself
	every time.Duration

	mu       sync.Mutex
	last     time.Time
	lastLen  int
	finished bool
}

// NewBar returns a bar that redraws at most ten times a second.
func NewBar(w io.Writer) *Bar {
	return &Bar{w: w, width: 30, every: 100 * time.Millisecond}
}

// Status shows a message on the bar's line (for example while loading).
func (b *Bar) Status(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw(msg)
}

// Update redraws the bar for p, unless it was redrawn very recently and p
// is not the last update.
func (b *Bar) Update(p Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if p.Done < p.Total && now.Sub(b.last) < b.every {
		return
	}
	b.last = now
	b.draw(FormatProgress(p, b.width))
}

// Finish clears the bar's line, leaving the cursor at its start.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastLen > 0 && !b.finished {
		fmt.Fprintf(b.w, "\r%s\r", strings.Repeat(" ", b.lastLen))
	}
	b.finished = true
}

func (b *Bar) draw(line string) {
	pad := ""
	if n := len([]rune(line)); n < b.lastLen {
		pad = strings.Repeat(" ", b.lastLen-n)
	}
	fmt.Fprintf(b.w, "\r%s%s", line, pad)
	b.lastLen = len([]rune(line))
	b.finished = false
}

// FormatProgress renders p as "[=====>     ] 12/20 queries  60%  1234 pairs/s  ETA 3s"
// with a bar of width cells. The rate and ETA count pairs, the unit of work.
func FormatProgress(p Progress, width int) string {
	frac := 0.0
	if p.TotalPairs > 0 {
		frac = float64(p.Pairs) / float64(p.TotalPairs)
	} else if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	frac = min(max(frac, 0), 1)
	filled := int(frac * float64(width))
	bar := strings.Repeat("=", filled)
	if filled < width {
		if filled > 0 {
			bar = bar[:filled-1] + ">"
		}
		bar += strings.Repeat(" ", width-filled)
	}
	rate := 0.0
	if s := p.Elapsed.Seconds(); s > 0 {
		rate = float64(p.Pairs) / s
	}
	eta := "ETA --"
	if rate > 0 && p.Pairs < p.TotalPairs {
		eta = "ETA " + formatDuration(time.Duration(float64(p.TotalPairs-p.Pairs)/rate*float64(time.Second)))
	} else if p.Done >= p.Total && p.Total > 0 {
		eta = "done in " + formatDuration(p.Elapsed)
	}
	return fmt.Sprintf("[%s] %d/%d queries %3.0f%%  %.0f pairs/s  %s", bar, p.Done, p.Total, frac*100, rate, eta)
}

// formatDuration prints whole seconds: "42s", "3m07s", "1h02m".
func formatDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm", s/3600, (s%3600)/60)
}
