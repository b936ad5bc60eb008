package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Info is a build's identity.
type Info struct {
	// Version is the module version ("v1.2.3" for a module fetched by
	// version, "(devel)" for a build of a checkout).
	Version string
	// Revision is the VCS revision the binary was built from; Time its
	// commit time (RFC 3339); Modified, whether the tree had changes not
	// committed. Empty when the build stamped none (-buildvcs=false).
	Revision, Time string
	Modified       bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// stampedVersion and stampedRevision are set at link time where the
// toolchain cannot stamp the VCS (a container build has no .git):
//
//	go build -ldflags "-X github.com/rerank/rerank/version.stampedVersion=v1.2.3 -X github.com/rerank/rerank/version.stampedRevision=$(git rev-parse HEAD)"
//
// deploy/Dockerfile does so from its VERSION and REVISION build arguments;
// `make build` also links the commit time and "true" when the tree had
// changes not committed.
var stampedVersion, stampedRevision, stampedTime, stampedModified string

// Read returns the running binary's Info.
func Read() Info {
	in := Info{Version: "unknown", GoVersion: "unknown"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		in = fromBuildInfo(bi)
	}
	return in.stamped(stampedVersion, stampedRevision, stampedTime, stampedModified == "true")
}

// stamped fills what the toolchain did not stamp from the link-time values.
func (in Info) stamped(version, revision, time string, modified bool) Info {
	if version != "" && (in.Version == "(devel)" || in.Version == "unknown") {
		in.Version = version
	}
	if revision != "" && in.Revision == "" {
		in.Revision, in.Time, in.Modified = revision, time, modified
	}
	return in
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if in.Version == "" {
		in.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// ShortRevision is the revision's first 12 characters, "+dirty" when the
// tree was modified; "unknown" without one.
func (in Info) ShortRevision() string {
	if in.Revision == "" {
		return "unknown"
	}
	r := in.Revision[:min(12, len(in.Revision))]
	if in.Modified {
		r += "+dirty"
	}
	return r
}

// String is the one-line form: "(devel) 0123456789ab+dirty 2026-12-07T… go1.26.8".
func (in Info) String() string {
	parts := []string{in.Version, in.ShortRevision()}
	if in.Time != "" {
		parts = append(parts, in.Time)
	}
	return fmt.Sprintf("%s %s", strings.Join(parts, " "), in.GoVersion)
}
