package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
)

// checkpoint is the training state rank 0 writes every -checkpoint-every
// steps and -resume reads: the learnables (cnn.Net.Values order), the BN
// layers' running statistics (mean then variance, layer by layer) and the
// number of steps done. The momentum of the solver is not saved: a resumed
// run starts it from zero. JSON keeps float64 values exact.
type checkpoint struct {
	Run     string    `json:"run"`
	Step    int       `json:"step"` // steps done
	Workers int       `json:"workers"`
	Batch   int       `json:"batch"`
	Seed    int64     `json:"seed"`
	Dtype   string    `json:"dtype"`
	Depth   int       `json:"depth,omitempty"` // -depth (absent: 0)
	Act     string    `json:"act,omitempty"`   // -act (absent: relu)
	Params  []float64 `json:"params"`
	Running []float64 `json:"running"`
	State   string    `json:"state"` // stateHash(Params, Running)
}

// stateHash is the hex SHA-256 of the values' IEEE 754 bits: two runs print
// the same hash exactly when their parameters and running statistics are
// bitwise equal.
func stateHash(parts ...[]float64) string {
	h := sha256.New()
	var b [8]byte
	for _, p := range parts {
		for _, v := range p {
			binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
			h.Write(b[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// runningStats returns the running statistics of n's BN layers, each
// layer's mean then variance.
func runningStats(n *cnn.Net) []float64 {
	var out []float64
	for _, l := range n.BNs {
		m, v := l.RunningStats()
		out = append(append(out, m...), v...)
	}
	return out
}

// setState loads params (cnn.Net.Values order) and running statistics into
// n, in place (the weights are shared with the evaluation nets).
func setState(n *cnn.Net, params, running []float64) error {
	off := 0
	for _, p := range n.Learnables {
		switch d := p.Value().Data().(type) {
		case []float32:
			if off+len(d) > len(params) {
				return fmt.Errorf("checkpoint: %d parameters, the net has more", len(params))
			}
			for i := range d {
				d[i] = float32(params[off+i])
			}
			off += len(d)
		case []float64:
			if off+len(d) > len(params) {
				return fmt.Errorf("checkpoint: %d parameters, the net has more", len(params))
			}
			off += copy(d, params[off:])
		default:
			return fmt.Errorf("checkpoint: parameter %s of type %T", p.Name(), d)
		}
	}
	if off != len(params) {
		return fmt.Errorf("checkpoint: %d parameters, the net has %d", len(params), off)
	}
	return setRunning(n, running)
}

// setRunning loads running statistics (runningStats order) into n's layers.
func setRunning(n *cnn.Net, running []float64) error {
	off := 0
	for _, l := range n.BNs {
		C := l.Channels()
		if off+2*C > len(running) {
			return fmt.Errorf("checkpoint: %d running statistics, the net has more", len(running))
		}
		if err := l.SetRunningStats(running[off:off+C], running[off+C:off+2*C]); err != nil {
			return err
		}
		off += 2 * C
	}
	if off != len(running) {
		return fmt.Errorf("checkpoint: %d running statistics, the net has %d", len(running), off)
	}
	return nil
}

// writeCheckpoint writes ck to path atomically (a temporary file renamed).
func writeCheckpoint(path string, ck *checkpoint) error {
	b, err := json.Marshal(ck)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// readCheckpoint reads path and checks it against cfg and its own hash.
func readCheckpoint(path string, cfg runConfig) (*checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ck checkpoint
	if err := json.Unmarshal(b, &ck); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if ck.Act == "" {
		ck.Act = cnn.ReLU.String() // written before -act existed
	}
	if ck.Workers != cfg.workers || ck.Batch != cfg.batch || ck.Seed != cfg.seed || ck.Dtype != cfg.dtype.String() ||
		ck.Depth != cfg.depth || ck.Act != cfg.act.String() {
		return nil, fmt.Errorf("checkpoint %s: written by %d workers × %d, seed %d, %s, depth %d, %s; this run is %d × %d, seed %d, %s, depth %d, %s",
			path, ck.Workers, ck.Batch, ck.Seed, ck.Dtype, ck.Depth, ck.Act, cfg.workers, cfg.batch, cfg.seed, cfg.dtype, cfg.depth, cfg.act)
	}
	if h := stateHash(ck.Params, ck.Running); h != ck.State {
		return nil, fmt.Errorf("checkpoint %s: state hash %s, recorded %s (damaged file)", path, h, ck.State)
	}
	if ck.Step < 0 || ck.Step >= cfg.steps {
		return nil, fmt.Errorf("checkpoint %s: %d steps done, this run has %d", path, ck.Step, cfg.steps)
	}
	return &ck, nil
}

// resume makes every worker start from rank 0's checkpoint: rank 0 reads
// path and loads it into tn; the step count and the running statistics are
// broadcast (the parameters follow with the DataParallel broadcast that
// every run starts with). It returns the number of steps done.
func resume(ctx context.Context, comm collective.Communicator, tn *cnn.Net, cfg runConfig, logf func(string, ...any)) (int, error) {
	rank := 0
	if comm != nil {
		rank = comm.Rank()
	}
	hdr := []float64{0, 0} // steps done, error
	var ck *checkpoint
	var err error
	if rank == 0 {
		if ck, err = readCheckpoint(cfg.resume, cfg); err == nil {
			err = setState(tn, ck.Params, ck.Running)
		}
		if err != nil {
			hdr[1] = 1
		} else {
			hdr[0] = float64(ck.Step)
		}
	}
	if comm != nil {
		bctx, cancel := cfg.bound(ctx)
		defer cancel()
		if berr := comm.Broadcast(bctx, collective.Float64s(hdr), 0); berr != nil {
			return 0, cfg.collectiveErr("resume: broadcast", -1, berr)
		}
		if hdr[1] != 0 {
			if err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("resume: rank 0 could not load %s", cfg.resume)
		}
		running := runningStats(tn)
		if berr := comm.Broadcast(bctx, collective.Float64s(running), 0); berr != nil {
			return 0, cfg.collectiveErr("resume: broadcast", -1, berr)
		}
		if rank != 0 {
			if err := setRunning(tn, running); err != nil {
				return 0, err
			}
		}
	} else if err != nil {
		return 0, err
	}
	if ck != nil {
		logf("%-14s resumed from %s: %d steps done (state %s)", cfg.name, cfg.resume, ck.Step, ck.State)
	}
	return int(hdr[0]), nil
}

// saveCheckpoint writes tn's state after done steps (rank 0).
func saveCheckpoint(tn *cnn.Net, cfg runConfig, done int, logf func(string, ...any)) error {
	ck := &checkpoint{Run: cfg.name, Step: done, Workers: cfg.workers, Batch: cfg.batch, Seed: cfg.seed,
		Dtype: cfg.dtype.String(), Depth: cfg.depth, Params: tn.Values(), Running: runningStats(tn)}
	if cfg.act != cnn.ReLU {
		ck.Act = cfg.act.String()
	}
	ck.State = stateHash(ck.Params, ck.Running)
	t0 := time.Now()
	if err := writeCheckpoint(cfg.checkpoint, ck); err != nil {
		return fmt.Errorf("%s: checkpoint after step %d: %w", cfg.name, done, err)
	}
	logf("%-14s checkpoint: step %d written to %s (state %s, %.0f ms)", cfg.name, done, cfg.checkpoint, ck.State, 1e3*time.Since(t0).Seconds())
	return nil
}
