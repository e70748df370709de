// Package manifest describes an artifacts directory (manifest.json): which graph files it
// holds and what each graph input and output means. `prepare` writes it and `train`,
// `eval` and `bench` read it; keeping it apart from both avoids an import cycle and makes
// the contract between them one small file.
package manifest
