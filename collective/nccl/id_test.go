package nccl

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestUniqueIDFloat64s(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for range 100 {
		var id UniqueID
		r.Read(id[:])
		got, err := UniqueIDFromFloat64s(id.Float64s())
		if err != nil || got != id {
			t.Fatalf("round trip: %v, %x != %x", err, got, id)
		}
	}
	for _, bad := range [][]float64{make([]float64, 31), append(make([]float64, 31), -1), append(make([]float64, 31), 1<<32), append(make([]float64, 31), 0.5)} {
		if _, err := UniqueIDFromFloat64s(bad); err == nil {
			t.Errorf("UniqueIDFromFloat64s(%v): no error", bad[len(bad)-1])
		}
	}
}

func TestUniqueIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id")
	var id UniqueID
	for i := range id {
		id[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		got, err := ReadUniqueID(context.Background(), path)
		if err == nil && got != id {
			err = errors.New("read a different id")
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := WriteUniqueID(path, id); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := ReadUniqueID(ctx, path+".missing"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadUniqueID(context.Background(), path); err == nil {
		t.Error("short file: no error")
	}
}
