package main

import (
	"context"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rerank/rerank/metrics"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/version"
)

func cmdVersion(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("version", "(also rerank --version)", stderr)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	in := version.Read()
	modified := ""
	if in.Modified {
		modified = " (modified: built with changes not committed)"
	}
	fmt.Fprintf(stdout, "rerank %s\nrevision     %s%s\ncommitted    %s\ngo           %s\nonnxruntime  %s (the release this build is made for)\n",
		in.Version, orUnknown(in.Revision), modified, orUnknown(in.Time), in.GoVersion, model.ORTVersion)
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// buildAttrs are the build's attributes for the start-up log line.
func buildAttrs() []any {
	in := version.Read()
	return []any{"version", in.Version, "revision", in.ShortRevision(), "go_version", in.GoVersion, "ort_version", model.ORTVersion}
}

// registerBuildInfo exports rerank_build_info on r.
func registerBuildInfo(r *prometheus.Registry) {
	in := version.Read()
	metrics.RegisterBuildInfo(r, in.Version, in.ShortRevision(), in.GoVersion, model.ORTVersion)
}
