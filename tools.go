//go:build tools

// This file pins modules the project depends on before code imports them, and
// modules whose files (not code) it uses, so that `go mod download` fetches
// them and go.sum verifies them.
package rerank

import (
	// tokenizer.json (BERT uncased, 30,522 tokens) for the generated demo and test models.
	_ "github.com/clems4ever/all-minilm-l6-v2-go/all_minilm_l6_v2"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/sugarme/tokenizer/pretrained"
	_ "github.com/vmihailenco/msgpack/v5"
	_ "github.com/yalue/onnxruntime_go"
	_ "golang.org/x/text/unicode/norm"
	_ "google.golang.org/protobuf/encoding/protowire"
)
