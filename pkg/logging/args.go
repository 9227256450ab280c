package logging

// DefaultOptions are the options AddFlags leaves unchanged: text, info.
// Daemon configurations start from them, so that binding the flags does not
// change a default configuration and Args stays the exact inverse.
func DefaultOptions() Options { return Options{Format: "text", Level: "info"} }

// Args renders the options as flags, the inverse of AddFlags; the defaults
// (text, info, or empty) are left out.
func (o Options) Args() []string {
	var args []string
	if o.Format != "" && o.Format != "text" {
		args = append(args, "--log-format="+o.Format)
	}
	if o.Level != "" && o.Level != "info" {
		args = append(args, "--log-level="+o.Level)
	}
	return args
}
