package eval

import (
	"math"
	"testing"
)

func approx(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// The t distribution has closed forms for small df, which check the
// incomplete beta route independently:
//
//	df=1 (Cauchy): P(|T|>=t) = 1 - (2/π)·atan(t)
//	df=2:          P(|T|>=t) = 1 - t/sqrt(2+t²)
//	df=3:          P(|T|>=t) = 1 - (2/π)·(u/(1+u²) + atan(u)), u = t/√3
func TestStudentTClosedForms(t *testing.T) {
	for _, tv := range []float64{0, 0.1, 0.5, 1, 1.5, 2, 3.7, 10, 100} {
		cases := []struct {
			df   float64
			want float64
		}{
			{1, 1 - 2/math.Pi*math.Atan(tv)},
			{2, 1 - tv/math.Sqrt(2+tv*tv)},
			{3, 1 - 2/math.Pi*(tv/math.Sqrt(3)/(1+tv*tv/3)+math.Atan(tv/math.Sqrt(3)))},
		}
		for _, c := range cases {
			if got := StudentTTwoSided(tv, c.df); !approx(got, c.want, 1e-12) {
				t.Errorf("df %v t %v: p = %.15g, want %.15g", c.df, tv, got, c.want)
			}
			if got := StudentTTwoSided(-tv, c.df); !approx(got, c.want, 1e-12) {
				t.Errorf("df %v t %v: p is not symmetric", c.df, -tv)
			}
		}
	}
}

// Critical values from t tables: P(|T| >= t) = 0.05 or 0.01.
func TestStudentTCriticalValues(t *testing.T) {
	for _, c := range []struct{ t, df, p float64 }{
		{12.706204736174698, 1, 0.05},
		{2.570581835636314, 5, 0.05},
		{2.2281388519649385, 10, 0.05},
		{2.0422724563012373, 30, 0.05},
		{1.9842169515086827, 99, 0.05},
		{4.032142983557536, 5, 0.01},
		{2.7499956535670305, 30, 0.01},
	} {
		if got := StudentTTwoSided(c.t, c.df); !approx(got, c.p, 1e-9) {
			t.Errorf("t %v df %v: p = %.12f, want %v", c.t, c.df, got, c.p)
		}
	}
	if got := StudentTCDF(2.2281388519649385, 10); !approx(got, 0.975, 1e-9) {
		t.Errorf("CDF = %v, want 0.975", got)
	}
	if got := StudentTCDF(-2.2281388519649385, 10); !approx(got, 0.025, 1e-9) {
		t.Errorf("CDF = %v, want 0.025", got)
	}
}

// The CDF against a direct Simpson integration of the t density.
func TestStudentTAgainstIntegration(t *testing.T) {
	for _, df := range []float64{4, 7, 19, 60} {
		lg1, _ := math.Lgamma((df + 1) / 2)
		lg2, _ := math.Lgamma(df / 2)
		c := math.Exp(lg1-lg2) / math.Sqrt(df*math.Pi)
		pdf := func(x float64) float64 { return c * math.Pow(1+x*x/df, -(df+1)/2) }
		for _, tv := range []float64{0.3, 1.1, 2.4} {
			const n = 20000 // P(0 <= T <= t) by Simpson's rule
			h := tv / n
			sum := pdf(0) + pdf(tv)
			for i := 1; i < n; i++ {
				w := 2.0
				if i%2 == 1 {
					w = 4
				}
				sum += w * pdf(float64(i)*h)
			}
			want := 0.5 + sum*h/3
			if got := StudentTCDF(tv, df); !approx(got, want, 1e-10) {
				t.Errorf("df %v t %v: CDF %.12f, integration %.12f", df, tv, got, want)
			}
		}
	}
}

func TestRegIncBeta(t *testing.T) {
	// I_x(1,1) = x; I_x(a,1) = x^a; I_x(1,b) = 1-(1-x)^b; I_0.5(a,a) = 0.5.
	for _, x := range []float64{0, 0.01, 0.3, 0.5, 0.77, 0.999, 1} {
		if got := RegIncBeta(1, 1, x); !approx(got, x, 1e-14) {
			t.Errorf("I_%v(1,1) = %v", x, got)
		}
		if got := RegIncBeta(3.5, 1, x); !approx(got, math.Pow(x, 3.5), 1e-14) {
			t.Errorf("I_%v(3.5,1) = %v", x, got)
		}
		if got := RegIncBeta(1, 6, x); !approx(got, 1-math.Pow(1-x, 6), 1e-14) {
			t.Errorf("I_%v(1,6) = %v", x, got)
		}
	}
	for _, a := range []float64{0.5, 2, 37.5, 3490} {
		if got := RegIncBeta(a, a, 0.5); !approx(got, 0.5, 1e-12) {
			t.Errorf("I_0.5(%v,%v) = %v", a, a, got)
		}
	}
	if !math.IsNaN(RegIncBeta(-1, 1, 0.5)) || !math.IsNaN(RegIncBeta(1, 1, 1.5)) {
		t.Error("invalid arguments should give NaN")
	}
}

func TestPairedTTest(t *testing.T) {
	// a = 1,2,3,4; b = 2,2,5,7 → d = b-a = 1,0,2,3.
	//   mean d = 6/4 = 1.5
	//   Σ(d-mean)² = 0.25 + 2.25 + 0.25 + 2.25 = 5; variance 5/3
	//   t = 1.5 / sqrt((5/3)/4) = 1.5 / sqrt(5/12) = sqrt(2.25·12/5) = sqrt(5.4) = 2.3237900077
	//   df 3: with u = t/√3 = sqrt(1.8) = 1.3416407865, 1+u² = 2.8,
	//   p = 1 - (2/π)(u/2.8 + atan u) = 1 - 0.6366197724·(0.4791574237 + 0.9302740141)
	//     = 1 - 0.6366197724·1.4094314379 = 1 - 0.8972719211 = 0.1027280789
	res := PairedTTest([]float64{1, 2, 3, 4}, []float64{2, 2, 5, 7})
	if res.N != 4 || res.DF != 3 || !approx(res.T, math.Sqrt(5.4), 1e-12) {
		t.Fatalf("got %+v, want n 4, df 3, t %v", res, math.Sqrt(5.4))
	}
	u := math.Sqrt(1.8)
	want := 1 - 2/math.Pi*(u/2.8+math.Atan(u))
	if !approx(res.P, want, 1e-12) || !approx(res.P, 0.1027280789, 1e-10) {
		t.Fatalf("p = %.10f, want %.10f", res.P, want)
	}
	// Swapping the samples flips t, not p.
	if r := PairedTTest([]float64{2, 2, 5, 7}, []float64{1, 2, 3, 4}); !approx(r.T, -res.T, 1e-12) || !approx(r.P, res.P, 1e-15) {
		t.Fatalf("swapped: %+v", r)
	}
	// Degenerate cases.
	if r := PairedTTest([]float64{0.5, 0.25}, []float64{0.5, 0.25}); r.P != 1 || r.T != 0 {
		t.Errorf("identical samples: %+v, want p 1", r)
	}
	if r := PairedTTest([]float64{0.1, 0.2, 0.3}, []float64{0.2, 0.3, 0.4}); r.P != 0 || !math.IsInf(r.T, 1) {
		t.Errorf("constant shift: %+v, want p 0", r)
	}
	if r := PairedTTest([]float64{1}, []float64{2}); !math.IsNaN(r.P) {
		t.Errorf("one pair: %+v, want NaN p", r)
	}
}
