package bn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// precisePopulations runs a Precise pass of net over the given batches and
// returns the populations of its two layers.
func precisePopulations(t *testing.T, net *preciseNet, batches [][]float64, C, S int) []Population {
	t.Helper()
	rep, err := Precise(context.Background(), []Normalizer{net.l1, net.l2}, func(ctx context.Context, i int) (int, error) {
		if i >= len(batches) {
			return 0, io.EOF
		}
		n := len(batches[i]) / (C * S)
		return n, net.forward(n, batches[i])
	}, PreciseOptions{Batches: len(batches)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Populations) != 2 || rep.Populations[0].Layer != "bn1" || rep.Populations[1].Layer != "bn2" {
		t.Fatalf("report populations %+v", rep.Populations)
	}
	return rep.Populations
}

// TestMergePopulationsIsUnion: the populations of label-skewed "nodes"
// (each its own Precise pass, on data with a different offset), merged
// offline, equal the population of the union computed naively in float64
// (first layer, whose input is the data) and the population of a Precise
// pass over the union (both layers). The average of the nodes' variances,
// the estimate seed 000 warns about, is far from it.
func TestMergePopulationsIsUnion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dt     tensor.Dtype
		inner  []int
		offset float64
		tol    float64
	}{
		{"f64 2d", tensor.Float64, nil, 0, 1e-12},
		{"f64 4d", tensor.Float64, []int{2, 3}, 0, 1e-12},
		{"f32 4d offset 1e4", tensor.Float32, []int{2, 2}, 1e4, 1e-12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const C = 3
			S := 1
			for _, d := range tc.inner {
				S *= d
			}
			// Three nodes with 2, 1 and 3 batches of varying sizes, each
			// node's data around its own mean.
			nodes := [][]int{{5, 7}, {4}, {6, 5, 3}}
			r := rand.New(rand.NewSource(7))
			var sizes []int
			var all [][]float64
			parts := make([][][]float64, len(nodes))
			for k, ns := range nodes {
				for _, n := range ns {
					b := randn(r, n*C*S, tc.offset+3*float64(k), 1+float64(k))
					if tc.dt == tensor.Float32 {
						for j, v := range b {
							b[j] = float64(float32(v))
						}
					}
					parts[k] = append(parts[k], b)
					all = append(all, b)
					sizes = append(sizes, n)
				}
			}
			net := newPreciseNet(t, tc.dt, C, tc.inner, sizes)
			var first, second []Population
			for k := range nodes {
				ps := precisePopulations(t, net, parts[k], C, S)
				first, second = append(first, ps[0]), append(second, ps[1])
			}
			merged1, err := MergePopulations(first...)
			if err != nil {
				t.Fatal(err)
			}
			merged2, err := MergePopulations(second...)
			if err != nil {
				t.Fatal(err)
			}
			union := precisePopulations(t, net, all, C, S)
			mean, variance := population(all, C, S)
			total := 0
			for _, n := range sizes {
				total += n * S
			}
			close := func(a, b float64) bool { return math.Abs(a-b) <= tc.tol*math.Max(1, math.Abs(b)) }
			for c := range C {
				if merged1.N[c] != float64(total) || !close(merged1.Mean[c], mean[c]) || !close(merged1.UnbiasedVar()[c], variance[c]) {
					t.Errorf("bn1 channel %d: merged n %v mean %v var %v, naive n %d mean %v var %v", c, merged1.N[c], merged1.Mean[c], merged1.UnbiasedVar()[c], total, mean[c], variance[c])
				}
				for _, pair := range [][2]Population{{merged1, union[0]}, {merged2, union[1]}} {
					m, u := pair[0], pair[1]
					if m.N[c] != u.N[c] || !close(m.Mean[c], u.Mean[c]) || !close(m.M2[c], u.M2[c]) {
						t.Errorf("%s channel %d: merged (%v, %v, %v), union pass (%v, %v, %v)", u.Layer, c, m.N[c], m.Mean[c], m.M2[c], u.N[c], u.Mean[c], u.M2[c])
					}
				}
				// What averaging the nodes' running statistics gives.
				var avg float64
				for _, p := range first {
					avg += p.UnbiasedVar()[c] / float64(len(first))
				}
				if math.Abs(avg-variance[c]) < 0.2*variance[c] {
					t.Errorf("channel %d: the average of the nodes' variances %v is close to the union's %v: the data is not skewed", c, avg, variance[c])
				}
			}
			// Applied to a layer: its running statistics are the union's.
			if err := net.l1.SetPopulation(merged1); err != nil {
				t.Fatal(err)
			}
			rm, rv := net.l1.RunningStats()
			for c := range C {
				if !close(rm[c], mean[c]) || !close(rv[c], variance[c]) {
					t.Errorf("SetPopulation channel %d: running (%v, %v), want (%v, %v)", c, rm[c], rv[c], mean[c], variance[c])
				}
			}
		})
	}
}

func testPopulation() Population {
	return Population{Layer: "bn1", Groups: 1, Channels: 2, N: []float64{4, 10}, Mean: []float64{1, -2}, M2: []float64{3, 0.5}}
}

func TestMergePopulationsEdges(t *testing.T) {
	p := testPopulation()
	empty := Population{Layer: "bn1", Groups: 1, Channels: 2, N: make([]float64, 2), Mean: make([]float64, 2), M2: make([]float64, 2)}
	for _, ps := range [][]Population{{p}, {empty, p}, {p, empty}, {empty, p, empty}} {
		m, err := MergePopulations(ps...)
		if err != nil {
			t.Fatal(err)
		}
		for i := range p.N {
			if m.N[i] != p.N[i] || m.Mean[i] != p.Mean[i] || m.M2[i] != p.M2[i] {
				t.Errorf("merging with empty populations changed entry %d: %+v", i, m)
			}
		}
	}
	if m, err := MergePopulations(empty, empty); err != nil || m.N[0] != 0 || !math.IsNaN(m.Var()[0]) || !math.IsNaN(m.UnbiasedVar()[1]) {
		t.Errorf("merge of empties: %+v, %v", m, err)
	}
	// A one-value population merged with itself: n 2, M2 0.
	one := Population{Groups: 1, Channels: 1, N: []float64{1}, Mean: []float64{5}, M2: []float64{0}}
	if m, err := MergePopulations(one, one); err != nil || m.N[0] != 2 || m.Mean[0] != 5 || m.M2[0] != 0 {
		t.Errorf("one+one: %+v, %v", m, err)
	}

	other := p
	other.Channels, other.N, other.Mean, other.M2 = 3, []float64{1, 1, 1}, []float64{0, 0, 0}, []float64{0, 0, 0}
	grouped := p
	grouped.Groups, grouped.Channels = 2, 1
	renamed := p
	renamed.Layer = "bn2"
	bad := func(mut func(q *Population)) Population {
		q := testPopulation()
		mut(&q)
		return q
	}
	for _, tc := range []struct {
		name string
		ps   []Population
		want error
	}{
		{"none", nil, ErrOption},
		{"channels differ", []Population{p, other}, ErrShape},
		{"groups differ", []Population{p, grouped}, ErrShape},
		{"layers differ", []Population{p, renamed}, ErrState},
		{"short slice", []Population{p, bad(func(q *Population) { q.M2 = q.M2[:1] })}, ErrState},
		{"negative count", []Population{bad(func(q *Population) { q.N[0] = -1 })}, ErrState},
		{"fractional count", []Population{bad(func(q *Population) { q.N[0] = 1.5 })}, ErrState},
		{"NaN mean", []Population{bad(func(q *Population) { q.Mean[1] = math.NaN() })}, ErrState},
		{"negative M2", []Population{bad(func(q *Population) { q.M2[1] = -1e-9 })}, ErrState},
		{"Inf M2", []Population{bad(func(q *Population) { q.M2[1] = math.Inf(1) })}, ErrState},
		{"zero channels", []Population{{Groups: 1}}, ErrState},
	} {
		if _, err := MergePopulations(tc.ps...); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestPopulationMarshal(t *testing.T) {
	p := testPopulation()
	p.Mean[0] = math.Nextafter(1, 2) // every bit survives
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var q Population
	if err := q.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if q.Layer != p.Layer || q.Groups != 1 || q.Channels != 2 {
		t.Fatalf("decoded %+v", q)
	}
	for i := range p.N {
		if q.N[i] != p.N[i] || q.Mean[i] != p.Mean[i] || q.M2[i] != p.M2[i] {
			t.Fatalf("decoded %+v, want %+v", q, p)
		}
	}
	flip := append([]byte(nil), b...)
	flip[30] ^= 1
	wrongVersion := append([]byte(nil), b...)
	wrongVersion[4] = 9
	for name, enc := range map[string][]byte{
		"empty": nil, "truncated": b[:len(b)-1], "corrupt": flip, "version": wrongVersion,
		"not a population": append([]byte("GBNS"), b[4:]...),
	} {
		r := q
		if err := r.UnmarshalBinary(enc); !errors.Is(err, ErrState) {
			t.Errorf("%s: error %v, want ErrState", name, err)
		}
		if r.Layer != q.Layer || len(r.N) != 2 {
			t.Errorf("%s: population changed on error: %+v", name, r)
		}
	}
	if _, err := (Population{Groups: 1, Channels: 1}).MarshalBinary(); !errors.Is(err, ErrState) {
		t.Errorf("marshal of an invalid population: %v", err)
	}
}

func TestSetPopulation(t *testing.T) {
	net := newPreciseNet(t, tensor.Float64, 2, nil, []int{4})
	p := testPopulation()
	p.N[1] = 1 // too few values: channel 1 keeps its statistics
	if err := net.l1.SetPopulation(p); err != nil {
		t.Fatal(err)
	}
	m, v := net.l1.RunningStats()
	if m[0] != 1 || v[0] != 1 || m[1] != 0 || v[1] != 1 { // M2 3 / (4−1)
		t.Errorf("running stats %v %v", m, v)
	}
	wide := Population{Groups: 1, Channels: 3, N: []float64{2, 2, 2}, Mean: make([]float64, 3), M2: make([]float64, 3)}
	if err := net.l1.SetPopulation(wide); !errors.Is(err, ErrShape) {
		t.Errorf("3 channels into a layer of 2: %v", err)
	}
	if err := net.l1.SetPopulation(Population{Groups: 1, Channels: 2}); !errors.Is(err, ErrState) {
		t.Errorf("invalid population: %v", err)
	}
	var nilLayer *Layer
	if err := nilLayer.SetPopulation(testPopulation()); !errors.Is(err, ErrOption) {
		t.Errorf("nil layer: %v", err)
	}
}

// Two nodes saw different data: node A the values 1, 2, 3 and node B the
// values 11, 12, 13 (on one channel). Their populations, merged, are those
// of all six values; the average of their variances (1 and 1) is not.
func ExampleMergePopulations() {
	a := Population{Layer: "bn1", Groups: 1, Channels: 1, N: []float64{3}, Mean: []float64{2}, M2: []float64{2}}
	b := Population{Layer: "bn1", Groups: 1, Channels: 1, N: []float64{3}, Mean: []float64{12}, M2: []float64{2}}
	u, err := MergePopulations(a, b)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("n %v, mean %v, unbiased variance %.1f\n", u.N[0], u.Mean[0], u.UnbiasedVar()[0])
	// Output: n 6, mean 7, unbiased variance 30.8
}

// TestGroupedPopulation: a layer with 2 groups (domains) applied with
// edgeSegs (sample i in group i % 2): the population of each group is the
// naive mean and M2 of its samples; merged over two passes it is that of
// both passes' samples; SetPopulation writes every group.
func TestGroupedPopulation(t *testing.T) {
	const N, C, G = 6, 2, 2
	g := gorgonia.NewGraph()
	l, err := newGrouped(g, C, tensor.Float64, G, true)
	if err != nil {
		t.Fatal(err)
	}
	x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(N, C), gorgonia.WithName("x"))
	y, err := l.applySegmented(x, edgeSegs{G})
	if err != nil {
		t.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g.SubgraphRoots(y))
	defer m.Close()
	r := rand.New(rand.NewSource(9))
	pass := func(data []float64) Population {
		rep, err := Precise(context.Background(), []Normalizer{l}, func(ctx context.Context, i int) (int, error) {
			if err := gorgonia.Let(x, tensor.New(tensor.WithShape(N, C), tensor.WithBacking(append([]float64(nil), data...)))); err != nil {
				return 0, err
			}
			m.Reset()
			return N, m.RunAll()
		}, PreciseOptions{Batches: 1})
		if err != nil {
			t.Fatal(err)
		}
		return rep.Populations[0]
	}
	a, b := randn(r, N*C, 1, 1), randn(r, N*C, -5, 3)
	pa, pb := pass(a), pass(b)
	if pa.Groups != G || pa.Channels != C || len(pa.N) != G*C {
		t.Fatalf("population %+v", pa)
	}
	merged, err := MergePopulations(pa, pb)
	if err != nil {
		t.Fatal(err)
	}
	for grp := range G {
		for c := range C {
			var vals []float64
			for _, d := range [][]float64{a, b} {
				for n := grp; n < N; n += G {
					vals = append(vals, d[n*C+c])
				}
			}
			var sum float64
			for _, v := range vals {
				sum += v
			}
			mean := sum / float64(len(vals))
			var m2 float64
			for _, v := range vals {
				m2 += (v - mean) * (v - mean)
			}
			k := grp*C + c
			if merged.N[k] != float64(len(vals)) || math.Abs(merged.Mean[k]-mean) > 1e-12 || math.Abs(merged.M2[k]-m2) > 1e-10*m2 {
				t.Errorf("group %d channel %d: merged (%v, %v, %v), naive (%d, %v, %v)", grp, c, merged.N[k], merged.Mean[k], merged.M2[k], len(vals), mean, m2)
			}
		}
	}
	if err := l.SetPopulation(merged); err != nil {
		t.Fatal(err)
	}
	rm, rv := l.RunningStats()
	uv := merged.UnbiasedVar()
	for k := range rm {
		if rm[k] != merged.Mean[k] || rv[k] != uv[k] {
			t.Errorf("entry %d: running (%v, %v), population (%v, %v)", k, rm[k], rv[k], merged.Mean[k], uv[k])
		}
	}
}
