package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// digest is the model's provenance: a SHA-256 of everything that decides
// its scores — the graph file as loaded (external data included), the
// tokenizer, rerank.json and the settings resolved from it and the
// export's files (output, logit column, activation, max_length,
// truncation) and whether the graph is handed over as it is. The
// execution provider is left out: CPU and CUDA scores of one model agree
// to ~1e-5 and are the same model's.
func (m *Model) digest(graph string) (string, error) {
	h := sha256.New()
	add := func(what, path string) error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("digesting the %s: %w", what, err)
		}
		defer f.Close()
		n, err := io.Copy(h, f)
		if err != nil {
			return fmt.Errorf("digesting the %s: %w", what, err)
		}
		fmt.Fprintf(h, "\x00%s:%d\x00", what, n)
		return nil
	}
	if err := add("graph", graph); err != nil {
		return "", err
	}
	// External data lies beside the graph (<graph>_data, <graph>.data).
	for _, ext := range []string{"_data", ".data"} {
		if _, err := os.Stat(graph + ext); err == nil {
			if err := add("graph data", graph+ext); err != nil {
				return "", err
			}
		}
	}
	if err := add("tokenizer", filepath.Join(m.dir, TokenizerFile)); err != nil {
		return "", err
	}
	settings, err := json.Marshal(struct {
		Config     json.RawMessage `json:"rerank_json"`
		Output     string          `json:"output"`
		Logit      int             `json:"logit"`
		Activation Activation      `json:"activation"`
		MaxLength  int             `json:"max_length"`
		Truncation any             `json:"truncation"`
		AsIs       bool            `json:"load_as_is"`
	}{m.cfg.Raw, m.output, m.logit, m.activation, m.cfg.MaxLength, m.cfg.Truncation, m.opts.LoadAsIs})
	if err != nil {
		return "", fmt.Errorf("digesting the settings: %w", err)
	}
	h.Write(settings)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Digest is the model's provenance, a SHA-256 in hex of everything that
// decides its scores (graph, tokenizer, rerank.json and the settings
// resolved from them): two models with one digest score every pair alike,
// and any change to those inputs changes it.
func (m *Model) Digest() string { return m.digestHex }

// BatchInvariant reports whether a pair's score does not depend on the
// pairs that share its batch (up to float rounding): false for a
// dynamically quantized graph run with batches over one pair, whose
// activation scales are the whole batch's. Such scores are not cached.
func (m *Model) BatchInvariant() bool { return !m.dynamicQuant || m.opts.MaxBatchSize == 1 }
