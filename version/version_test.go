package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want Info
		line string
	}{
		{"a checkout's build", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-07T19:00:00Z"}, {Key: "vcs.modified", Value: "true"}}},
			Info{Version: "(devel)", Revision: "0123456789abcdef0123", Time: "2026-12-07T19:00:00Z", Modified: true, GoVersion: "go1.26.8"},
			"(devel) 0123456789ab+dirty 2026-12-07T19:00:00Z go1.26.8"},
		{"a tagged module, no VCS stamp", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			Info{Version: "v1.2.3", GoVersion: "go1.26.8"}, "v1.2.3 unknown go1.26.8"},
		{"no main version", debug.BuildInfo{GoVersion: "go1.26.8"}, Info{Version: "(devel)", GoVersion: "go1.26.8"}, "(devel) unknown go1.26.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuildInfo(&tc.bi)
			if got != tc.want || got.String() != tc.line {
				t.Fatalf("%+v %q, want %+v %q", got, got.String(), tc.want, tc.line)
			}
		})
	}
}

// A container build has no VCS stamp: the link-time values fill it, and
// never replace what the toolchain stamped.
func TestStamped(t *testing.T) {
	bare := Info{Version: "(devel)", GoVersion: "go1.26.8"}
	if got := bare.stamped("v1.2.3", "abc", "2026-12-07T19:00:00Z", true); got.Version != "v1.2.3" || got.Revision != "abc" || got.Time != "2026-12-07T19:00:00Z" || !got.Modified {
		t.Fatalf("%+v", got)
	}
	vcs := Info{Version: "v1.0.0", Revision: "def", GoVersion: "go1.26.8"}
	if got := vcs.stamped("v1.2.3", "abc", "2026-12-07T19:00:00Z", true); got != vcs {
		t.Fatalf("%+v", got)
	}
}
