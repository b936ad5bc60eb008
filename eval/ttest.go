package eval

import "math"

// TTest is the result of a paired two-sided Student t-test.
type TTest struct {
	N  int     // pairs
	T  float64 // t statistic of mean(b-a) / (sd(b-a)/sqrt(n))
	DF int     // degrees of freedom, n-1
	P  float64 // two-sided p-value; NaN when n < 2
}

// PairedTTest tests whether b and a (the same queries, in the same order)
// have the same mean. When every difference is equal the statistic is
// degenerate: p is 1 when they are all zero (nothing changed) and 0
// otherwise (a constant shift). It panics if the lengths differ.
func PairedTTest(a, b []float64) TTest {
	if len(a) != len(b) {
		panic("eval: PairedTTest on samples of different lengths")
	}
	n := len(a)
	res := TTest{N: n, DF: n - 1, T: math.NaN(), P: math.NaN()}
	if n < 2 {
		return res
	}
	mean := 0.0
	for i := range a {
		mean += b[i] - a[i]
	}
	mean /= float64(n)
	ss := 0.0
	for i := range a {
		d := b[i] - a[i] - mean
		ss += d * d
	}
	variance := ss / float64(n-1)
	// Differences that are equal up to rounding count as equal: a variance
	// this far below the mean's square is summation noise.
	if variance <= 1e-24*mean*mean {
		if mean == 0 {
			res.T, res.P = 0, 1
		} else {
			res.T, res.P = math.Copysign(math.Inf(1), mean), 0
		}
		return res
	}
	res.T = mean / math.Sqrt(variance/float64(n))
	res.P = StudentTTwoSided(res.T, float64(res.DF))
	return res
}

// StudentTTwoSided is P(|T| >= |t|) for Student's t with df degrees of
// freedom: I_{df/(df+t²)}(df/2, 1/2).
func StudentTTwoSided(t, df float64) float64 {
	if math.IsNaN(t) || df <= 0 {
		return math.NaN()
	}
	if math.IsInf(t, 0) {
		return 0
	}
	return RegIncBeta(df/2, 0.5, df/(df+t*t))
}

// StudentTCDF is P(T <= t) for Student's t with df degrees of freedom.
func StudentTCDF(t, df float64) float64 {
	tail := StudentTTwoSided(t, df) / 2
	if t < 0 {
		return tail
	}
	return 1 - tail
}

// RegIncBeta is the regularized incomplete beta function I_x(a, b) for
// a, b > 0 and 0 <= x <= 1, evaluated with its continued fraction (modified
// Lentz) on whichever of I_x(a,b) = 1 - I_{1-x}(b,a) converges fast.
func RegIncBeta(a, b, x float64) float64 {
	switch {
	case math.IsNaN(x) || a <= 0 || b <= 0 || x < 0 || x > 1:
		return math.NaN()
	case x == 0:
		return 0
	case x == 1:
		return 1
	}
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	// x^a (1-x)^b / (a B(a,b)) is the prefactor of the fraction.
	front := math.Exp(lab - la - lb + a*math.Log(x) + b*math.Log1p(-x))
	if x < (a+1)/(a+b+2) {
		return front * betaFraction(a, b, x) / a
	}
	return 1 - front*betaFraction(b, a, 1-x)/b
}

// betaFraction evaluates the continued fraction
//
//	1 / (1 + d1 / (1 + d2 / (1 + ...)))
//
// with d(2m+1) = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)) and
// d(2m) = m(b-m)x / ((a+2m-1)(a+2m)), by the modified Lentz method.
func betaFraction(a, b, x float64) float64 {
	const (
		tiny    = 1e-300
		epsilon = 1e-16
		maxIter = 10000
	)
	clamp := func(v float64) float64 {
		if math.Abs(v) < tiny {
			return tiny
		}
		return v
	}
	c := 1.0
	d := 1 / clamp(1-(a+b)*x/(a+1))
	f := d
	for m := 1; m <= maxIter; m++ {
		fm := float64(m)
		// Even step: d(2m).
		num := fm * (b - fm) * x / ((a + 2*fm - 1) * (a + 2*fm))
		d = 1 / clamp(1+num*d)
		c = clamp(1 + num/c)
		f *= d * c
		// Odd step: d(2m+1).
		num = -(a + fm) * (a + b + fm) * x / ((a + 2*fm) * (a + 2*fm + 1))
		d = 1 / clamp(1+num*d)
		c = clamp(1 + num/c)
		delta := d * c
		f *= delta
		if math.Abs(delta-1) < epsilon {
			break
		}
	}
	return f
}
