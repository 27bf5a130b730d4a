package main

import (
	"context"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSaveLoad trains briefly, then evaluates the saved model with -load:
// the accuracy with running statistics equals the last one of training's
// report, and the folded model's matches it.
func TestSaveLoad(t *testing.T) {
	out := t.TempDir()
	o, err := parseFlags([]string{"-epochs", "1", "-batch", "32", "-train-subset", "320", "-test-subset", "200", "-eval-batch", "100", "-stat-batches", "8", "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := run(context.Background(), o, &sb); err != nil {
		t.Fatal(err)
	}
	trained := regexp.MustCompile(`trained BN, lr 0\.1 .*test accuracy ([0-9.]+)%`).FindStringSubmatch(sb.String())
	if trained == nil {
		t.Fatalf("no accuracy in the report:\n%s", sb.String())
	}
	path := filepath.Join(out, savedName)
	if !strings.Contains(sb.String(), "saved BN, lr 0.1") {
		t.Errorf("no save in the report:\n%s", sb.String())
	}
	o, err = parseFlags([]string{"-load", path, "-test-subset", "200", "-eval-batch", "100"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sb.Reset()
	if err := run(context.Background(), o, &sb); err != nil {
		t.Fatal(err)
	}
	got := regexp.MustCompile(`test accuracy ([0-9.]+)% with BN .* ([0-9.]+)% with BN folded`).FindStringSubmatch(sb.String())
	if got == nil || got[1] != trained[1] || got[2] != trained[1] {
		t.Errorf("loaded model: %q, trained model %s%%", sb.String(), trained[1])
	}
	t.Log(strings.TrimSpace(sb.String()))
	// A float64 model takes the float32 file (values convert).
	o, _ = parseFlags([]string{"-load", path, "-test-subset", "200", "-eval-batch", "100", "-dtype", "float64"}, io.Discard)
	sb.Reset()
	if err := run(context.Background(), o, &sb); err != nil {
		t.Errorf("float64 model, float32 file: %v", err)
	}
	t.Log(strings.TrimSpace(sb.String()))
}
