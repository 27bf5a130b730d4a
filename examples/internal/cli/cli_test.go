package cli

import (
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"

	"gorgonia.org/tensor"
)

func TestFlagSet(t *testing.T) {
	var out strings.Builder
	fs := NewFlagSet("demo", "Does a thing.", &out)
	n := fs.Int("n", 3, "how many")
	if err := Parse(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if want := "Usage: go run ./examples/demo [flags]\n\nDoes a thing.\n\n  -n int\n    \thow many (default 3)\n"; out.String() != want {
		t.Errorf("usage %q, want %q", out.String(), want)
	}
	if err := Parse(fs, []string{"-n", "4", "extra"}); err == nil || *n != 4 {
		t.Errorf("extra argument: %v (n %d)", err, *n)
	}
}

func TestLists(t *testing.T) {
	if got := Items(" a, ,b ,"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Items = %q", got)
	}
	got, err := Ints("sizes", "8, 1,,64", "size")
	if err != nil || !reflect.DeepEqual(got, []int{8, 1, 64}) {
		t.Errorf("Ints = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "x", "2,-1"} {
		if _, err := Ints("sizes", bad, "size"); err == nil || !strings.HasPrefix(err.Error(), "-sizes: ") {
			t.Errorf("Ints(%q): %v", bad, err)
		}
	}
}

func TestDtype(t *testing.T) {
	for s, want := range map[string]tensor.Dtype{"float32": tensor.Float32, "float64": tensor.Float64} {
		if dt, err := Dtype(s); err != nil || dt != want {
			t.Errorf("Dtype(%q) = %v, %v", s, dt, err)
		}
	}
	if _, err := Dtype("int"); err == nil {
		t.Error("int: no error")
	}
}

func TestParseErrorMarked(t *testing.T) {
	var out strings.Builder
	fs := NewFlagSet("demo", "Does a thing.", &out)
	fs.Int("n", 3, "how many")
	start := CPUProfile(fs)
	err := Parse(fs, []string{"-n", "x"})
	if err == nil || !errors.As(err, new(*printedError)) {
		t.Fatalf("bad flag: %v", err)
	}
	if strings.Count(out.String(), "invalid value") != 1 {
		t.Errorf("printed %q", out.String())
	}
	if err := Parse(fs, []string{"-n", "1", "extra"}); errors.As(err, new(*printedError)) {
		t.Errorf("an extra argument is not printed by the flag package: %v", err)
	}
	path := t.TempDir() + "/cpu.prof"
	if err := Parse(fs, []string{"-cpuprofile", path}); err != nil {
		t.Fatal(err)
	}
	stop, err := start()
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s, err := Seeds(3); err != nil || len(s) != 3 || s[2] != 3 {
		t.Errorf("Seeds(3) = %v, %v", s, err)
	}
	if _, err := Seeds(0); err == nil {
		t.Error("Seeds(0) accepted")
	}
}

func TestQuick(t *testing.T) {
	newSet := func(preset map[string]string) (*flag.FlagSet, *int, *string, func() error) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		n := fs.Int("n", 100, "")
		s := fs.String("s", "a,b", "")
		return fs, n, s, Quick(fs, preset)
	}
	preset := map[string]string{"n": "3", "s": "q"}
	for _, c := range []struct {
		args  []string
		wantN int
		wantS string
	}{
		{nil, 100, "a,b"},
		{[]string{"-quick"}, 3, "q"},
		{[]string{"-quick", "-n", "7"}, 7, "q"},
		{[]string{"-n", "7", "-quick"}, 7, "q"},
		{[]string{"-quick=false", "-s", "z"}, 100, "z"},
	} {
		fs, n, s, apply := newSet(preset)
		if err := Parse(fs, c.args); err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if err := apply(); err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if *n != c.wantN || *s != c.wantS {
			t.Errorf("%q: -n %d -s %q, want %d %q", c.args, *n, *s, c.wantN, c.wantS)
		}
	}
	for _, bad := range []map[string]string{{"nope": "1"}, {"n": "x"}} {
		fs, _, _, apply := newSet(bad)
		if err := Parse(fs, []string{"-quick"}); err != nil {
			t.Fatal(err)
		}
		if err := apply(); err == nil {
			t.Errorf("preset %v: no error", bad)
		}
	}
	fs, _, _, _ := newSet(preset)
	if u := fs.Lookup("quick").Usage; !strings.Contains(u, "-n 3, -s q") {
		t.Errorf("usage %q does not list the preset", u)
	}
}
