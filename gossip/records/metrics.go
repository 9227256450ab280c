package records

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	dropped *prometheus.CounterVec
	lag     prometheus.Histogram
}

type countCollector struct {
	t    *Table
	desc *prometheus.Desc
}

func (c *countCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *countCollector) Collect(ch chan<- prometheus.Metric) {
	live, tomb := c.t.Counts()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(live), "live")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(tomb), "tombstone")
}

func newMetrics(reg prometheus.Registerer, t *Table) (*metrics, error) {
	m := &metrics{
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kopsnode_gossip_records_dropped_total",
			Help: "Gossip records or messages dropped, by reason (malformed, invalid, oversized, limit, clock_ahead).",
		}, []string{"reason"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kopsnode_gossip_convergence_lag_seconds",
			Help:    "Time from a record's write at its owner (its HLC physical time) to its arrival here by broadcast.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30},
		}),
	}
	for _, r := range []string{"malformed", "invalid", "oversized", "limit", "clock_ahead"} {
		m.dropped.WithLabelValues(r)
	}
	if reg != nil {
		cc := &countCollector{t: t, desc: prometheus.NewDesc("kopsnode_gossip_records", "Records in the local table, by kind (live, tombstone).", []string{"kind"}, nil)}
		for _, c := range []prometheus.Collector{m.dropped, m.lag, cc} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
