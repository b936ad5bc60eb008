package worker

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// ackMsg is a delivered job whose DoubleAck records whether the job's slot
// had been given back by then.
type ackMsg struct {
	jetstream.Msg
	freed     *bool
	freedThen bool
	err       error
}

func (m *ackMsg) DoubleAck(context.Context) error { m.freedThen = *m.freed; return m.err }

// The slot goes back before the ack's round trip, on success and failure.
func TestAckGivesTheSlotBackFirst(t *testing.T) {
	w := &Worker{}
	for _, ackErr := range []error{nil, errors.New("ack timed out")} {
		freed := false
		m := &ackMsg{freed: &freed, err: ackErr}
		w.ack(context.Background(), slog.New(slog.DiscardHandler), m, func() { freed = true })
		if !m.freedThen {
			t.Errorf("ack error %v: the slot was still held during DoubleAck", ackErr)
		}
	}
	// Without a slot (a job settled before it took one) it only acks.
	m := &ackMsg{freed: new(bool)}
	w.ack(context.Background(), slog.New(slog.DiscardHandler), m, nil)
}
