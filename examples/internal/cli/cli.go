// Package cli is the command-line plumbing the examples share: the main
// function (interrupt handling, -h, the exit status), flag sets with a usage
// header, list and element-type flags, and progress bars.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"gorgonia.org/tensor"
)

// Main runs the example command name: it parses os.Args[1:] with parse
// (flags, with usage and errors on stderr) and calls run with a context that
// an interrupt (Ctrl-C) cancels. After -h it returns. A bad command line
// exits with status 2, its error printed once (the flag package has
// already printed a syntax error and the usage; Parse marks those); an
// error of run prints "name: error" to stderr and exits with status 1.
func Main[O any](name string, parse func(args []string, stderr io.Writer) (O, error), run func(ctx context.Context, o O) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	o, err := parse(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		if !errors.As(err, new(*printedError)) {
			fmt.Fprintln(os.Stderr, name+":", err)
		}
		os.Exit(2)
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// printedError is an error of the flag package, which has printed it
// already (with the usage).
type printedError struct{ err error }

func (e *printedError) Error() string { return e.err.Error() }
func (e *printedError) Unwrap() error { return e.err }

// NewFlagSet returns a flag set for the example name that reports errors to
// stderr and returns them (flag.ContinueOnError). Its usage message is
// "Usage: go run ./examples/name [flags]", the summary, then the flags.
func NewFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./examples/%s [flags]\n\n%s\n\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args with fs and rejects arguments that are not flags.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &printedError{err}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// Items splits the comma-separated value of a list flag into its items,
// trimmed of spaces; empty items are left out.
func Items(list string) []string {
	var out []string
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Ints parses the value of the list flag -name, integers ≥ 1 (see Items);
// what names one item in the error message ("batch size").
func Ints(name, list, what string) ([]int, error) {
	var out []int
	for _, f := range Items(list) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-%s: %q is not a %s ≥ 1", name, f, what)
		}
		out = append(out, n)
	}
	return out, nil
}

// Dtype returns the element type the -dtype flag names: float32 or
// float64.
func Dtype(s string) (tensor.Dtype, error) {
	switch s {
	case "float32":
		return tensor.Float32, nil
	case "float64":
		return tensor.Float64, nil
	}
	return tensor.Dtype{}, fmt.Errorf("-dtype %q, want float32 or float64", s)
}

// NewBar returns a progress bar of max steps described by desc, drawn on f
// when f is a terminal. Otherwise (a log file, a pipe) it prints one line,
// "desc (max steps)", and stays silent, so that a log shows every stage.
func NewBar(f *os.File, max int, desc string) *progressbar.ProgressBar {
	if !IsTerminal(f) {
		fmt.Fprintf(f, "%s %s (%d steps)\n", time.Now().Format("15:04:05"), desc, max)
	}
	return progressbar.NewOptions(max,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetVisibility(IsTerminal(f)),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
}

// CPUProfile adds the flag -cpuprofile to fs and returns the function that
// starts the profile the flag asks for (none when it is empty); the
// function it returns stops it and closes the file.
//
//	start := cli.CPUProfile(fs)
//	…
//	stop, err := start()
//	if err != nil { return err }
//	defer stop()
func CPUProfile(fs *flag.FlagSet) func() (stop func() error, err error) {
	path := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	return func() (func() error, error) {
		if *path == "" {
			return func() error { return nil }, nil
		}
		f, err := os.Create(*path)
		if err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
		return func() error {
			pprof.StopCPUProfile()
			return f.Close()
		}, nil
	}
}

// Seeds returns the seeds 1 … n of the -seeds flag (n ≥ 1).
func Seeds(n int) ([]int64, error) {
	if n < 1 {
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", n)
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out, nil
}

// Stage returns a function that prints one line, prefixed with the time
// since the call, to w: the progress of long stages when no progress bar
// is drawn (stdout is not a terminal), so that a log shows every stage.
func Stage(w io.Writer) func(format string, args ...any) {
	start := time.Now()
	return func(format string, args ...any) {
		fmt.Fprintf(w, "[%5.0fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Quick registers the flag -quick on fs: a small configuration, for tests
// and a first look, given as flag values. Call the returned function after
// Parse: when -quick was set, it gives every flag of preset that the
// command line did not set the preset's value (flags given explicitly
// win); a preset naming a flag fs does not have, or a value the flag
// rejects, is an error.
func Quick(fs *flag.FlagSet, preset map[string]string) func() error {
	keys := slices.Sorted(maps.Keys(preset))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = "-" + k + " " + preset[k]
	}
	quick := fs.Bool("quick", false, "a small configuration (tests, a first look): "+strings.Join(parts, ", ")+" (flags given explicitly win)")
	return func() error {
		if !*quick {
			return nil
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, k := range keys {
			if set[k] {
				continue
			}
			if err := fs.Set(k, preset[k]); err != nil {
				return fmt.Errorf("-quick: -%s %s: %w", k, preset[k], err)
			}
		}
		return nil
	}
}
