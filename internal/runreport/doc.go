// Package runreport holds what the training run report (train) and the benchmark report
// (bench) share: byte counts and Markdown table cells formatted one way (FormatBytes,
// MarkdownEscape), a configuration flattened to dotted key/value rows (Flatten), and the
// host memory sampling behind both reports' peak RSS (RSSSampler, RSSMonitor, and Loop,
// the periodic loop that bench's GPU and host timeline also runs on).
package runreport
