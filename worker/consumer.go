package worker

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consumerSettings are the redelivery settings of the consumer a worker is
// bound to, read from the server at start rather than from flags: under
// --provision=false the consumer is defined by ops, and its AckWait,
// BackOff and MaxDeliver are what the server enforces.
type consumerSettings struct {
	ackWait    time.Duration
	backoff    []time.Duration // redelivery delays after AckWait timeouts; replaces ackWait when set
	maxDeliver int             // -1 or 0: unlimited
}

func settingsOf(cons jetstream.Consumer, fallback Config) consumerSettings {
	s := consumerSettings{ackWait: fallback.AckWait, maxDeliver: fallback.MaxDeliver}
	if ci := cons.CachedInfo(); ci != nil {
		s.ackWait, s.backoff, s.maxDeliver = ci.Config.AckWait, ci.Config.BackOff, ci.Config.MaxDeliver
		if s.ackWait <= 0 {
			s.ackWait = DefaultAckWait // the server's own default
		}
	}
	return s
}

// ackWaitFor is how long the server waits for an ack of delivery n before
// redelivering: BackOff[n-1] (the last entry for later deliveries) when the
// consumer has a BackOff, else AckWait.
func (s consumerSettings) ackWaitFor(n uint64) time.Duration {
	if len(s.backoff) == 0 {
		return s.ackWait
	}
	i := int(min(n, uint64(len(s.backoff)))) - 1
	return s.backoff[max(i, 0)]
}

// heartbeat is the InProgress interval for delivery n: a third of its ack
// wait, or the configured interval when that is shorter.
func (s consumerSettings) heartbeat(n uint64, configured time.Duration) time.Duration {
	hb := s.ackWaitFor(n) / 3
	if configured > 0 && configured < hb {
		hb = configured
	}
	return max(hb, 10*time.Millisecond)
}

// last reports whether delivery n is the last the server makes.
func (s consumerSettings) last(n uint64) bool { return s.maxDeliver > 0 && n >= uint64(s.maxDeliver) }
