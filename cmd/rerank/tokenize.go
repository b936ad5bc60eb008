package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
)

func cmdTokenize(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", "--tokenizer tokenizer.json < pairs.jsonl", stderr)
	path := fs.String("tokenizer", "", "Hugging Face tokenizer.json (BERT WordPiece)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *path == "" {
		return &exitError{2, fmt.Errorf("--tokenizer is required")}
	}
	tok, err := wordpiece.Load(*path)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var in map[string]any
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			return &exitError{2, fmt.Errorf("line %d: %w", line, err)}
		}
		var req struct {
			A          string `json:"a"`
			B          string `json:"b"`
			MaxLength  int    `json:"max_length"`
			Truncation string `json:"truncation"`
		}
		_ = json.Unmarshal(sc.Bytes(), &req)
		if req.MaxLength == 0 {
			req.MaxLength = model.DefaultMaxLength
		}
		if req.Truncation == "" {
			req.Truncation = string(wordpiece.LongestFirst)
		}
		e, err := tok.EncodePair(req.A, req.B, req.MaxLength, wordpiece.Truncation(req.Truncation))
		if err != nil {
			return &exitError{2, fmt.Errorf("line %d: %w", line, err)}
		}
		in["ids"], in["type_ids"] = e.IDs, e.TypeIDs
		if err := enc.Encode(in); err != nil {
			return err
		}
	}
	return sc.Err()
}
