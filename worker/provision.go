package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfigs returns the definitions of the three streams, as the worker
// provisions them (deploy/ holds the same as JSON for the nats CLI).
func StreamConfigs(replicas int) []jetstream.StreamConfig {
	if replicas <= 0 {
		replicas = 1
	}
	return []jetstream.StreamConfig{
		{
			Name:        JobsStream,
			Description: "re-ranking jobs, one subject per model",
			Subjects:    []string{JobsPrefix + ">"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  DuplicateWindow,
			MaxMsgSize:  DefaultMaxMsgBytes,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        ResultsStream,
			Description: "re-ranking results by job id",
			Subjects:    []string{ResultsPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  DuplicateWindow,
			MaxAge:      ResultsMaxAge,
			MaxMsgSize:  DefaultMaxMsgBytes,
		},
		{
			Name:        DeadStream,
			Description: "dead-lettered jobs: original bytes with reason headers",
			Subjects:    []string{DeadPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  DuplicateWindow,
			MaxAge:      DeadMaxAge,
			MaxMsgSize:  DefaultMaxMsgBytes + 64<<10,
		},
	}
}

// ConsumerConfig is the durable pull consumer all workers of model share.
func ConsumerConfig(model string, c Config) jetstream.ConsumerConfig {
	c = c.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(model),
		Description:   "re-ranking workers for model " + model,
		FilterSubject: JobSubject(model),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      0, // inherit the stream's
	}
}

// ErrNotProvisioned means a stream or consumer the worker needs is missing
// and provisioning is off.
var ErrNotProvisioned = errors.New("stream or consumer not provisioned")

// Provision creates or updates the streams and the models' consumers.
func Provision(ctx context.Context, js jetstream.JetStream, models []string, c Config) error {
	for _, sc := range StreamConfigs(c.withDefaults().Replicas) {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("provisioning stream %s: %w", sc.Name, err)
		}
	}
	for _, m := range models {
		if _, err := js.CreateOrUpdateConsumer(ctx, JobsStream, ConsumerConfig(m, c)); err != nil {
			return fmt.Errorf("provisioning consumer %s: %w", ConsumerName(m), err)
		}
	}
	return nil
}

func lookupConsumers(ctx context.Context, js jetstream.JetStream, models []string) (map[string]jetstream.Consumer, error) {
	out := make(map[string]jetstream.Consumer, len(models))
	for _, m := range models {
		cons, err := js.Consumer(ctx, JobsStream, ConsumerName(m))
		if err != nil {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, fmt.Errorf("binding consumer %s on stream %s: %w (run with --provision or apply deploy/nats definitions): %v",
					ConsumerName(m), JobsStream, ErrNotProvisioned, err)
			}
			return nil, fmt.Errorf("binding consumer %s: %w", ConsumerName(m), err)
		}
		out[m] = cons
	}
	return out, nil
}
