// Latency percentiles from the recorded samples (microseconds). Closed-loop runs here record at most a
// few million samples, so an exact sort is cheaper to trust than a histogram's bucket error.
export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export function percentiles(samples: Float64Array): Percentiles {
  const n = samples.length;
  if (n === 0) return { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number): number => sorted[Math.min(n - 1, Math.ceil(q * n) - 1)];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: sorted[n - 1], mean: sum / n };
}
