package main

import (
	"io"
	"testing"
)

// TestQuickParses: every flag of the -quick preset exists and its value
// passes the command line's checks.
func TestQuickParses(t *testing.T) {
	if _, err := parseFlags([]string{"-quick"}, io.Discard); err != nil {
		t.Fatal(err)
	}
}
