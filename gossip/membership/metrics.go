package membership

import "github.com/prometheus/client_golang/prometheus"

type memberCollector struct {
	n    *Node
	desc *prometheus.Desc
}

func (c *memberCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *memberCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"alive": 0, "dead": 0}
	for _, m := range c.n.Members() {
		counts[m.State]++
	}
	for state, v := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), state)
	}
}

func registerMetrics(reg prometheus.Registerer, n *Node) error {
	if reg == nil {
		return nil
	}
	return reg.Register(&memberCollector{n: n, desc: prometheus.NewDesc("kopsnode_gossip_members", "Gossip members this node knows, by state (alive; dead covers failed and left).", []string{"state"}, nil)})
}
