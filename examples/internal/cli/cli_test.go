package cli

import (
	"errors"
	"flag"
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
