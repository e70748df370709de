package export

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
)

// Norm is one RMSNorm of the eval graph: its weight initializer and epsilon.
type Norm struct {
	Weight string
	Eps    float32
}

// Source is what export takes from an artifacts directory: the manifest, the eval graph
// (whose initializers still point into weights.bin) and the pieces of the decoder found in
// it, with the Hugging Face config that gives heads, head size and rotary frequencies.
type Source struct {
	Dir        string
	Man        *manifest.Manifest
	Eval       *ortgraph.Model
	G          *ortgraph.Graph
	Cfg        *hfimport.Config
	ConfigPath string
	// DType is the activations' float type (the embedding's).
	DType int32
	// Embed is the embedding initializer [vocab, hidden].
	Embed string
	// Norms are the 2·layers+1 RMSNorms in graph order: input and post-attention norm of
	// each layer, then the final norm.
	Norms []Norm
	// Linears by Hugging Face module path (lm_head included).
	Linears map[string]*passes.Linear
}

// Open reads an artifacts directory; hfConfig names the model's config.json ("" to look
// beside the source graph and in the directory prepare was given).
func Open(dir, hfConfig string) (*Source, error) {
	man, err := manifest.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	evalPath := filepath.Join(dir, man.Eval.File)
	m, err := ortgraph.Load(evalPath)
	if err != nil {
		return nil, err
	}
	s := &Source{Dir: dir, Man: man, Eval: m, G: ortgraph.NewGraph(m)}
	if s.ConfigPath, err = findConfig(man, hfConfig); err != nil {
		return nil, err
	}
	if s.Cfg, err = hfimport.LoadConfig(s.ConfigPath); err != nil {
		return nil, err
	}
	if err := s.checkConfig(); err != nil {
		return nil, err
	}
	if err := s.findPieces(evalPath); err != nil {
		return nil, err
	}
	return s, nil
}

// findConfig returns the first config.json of: --hf-config, the model the user gave
// prepare (a checkpoint directory, or beside an .onnx file), the source graph's directory.
func findConfig(man *manifest.Manifest, explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("--hf-config: %w", err)
		}
		return explicit, nil
	}
	var tried []string
	for _, p := range []string{baseModel(man), man.Source.Path} {
		if p == "" {
			continue
		}
		c := filepath.Join(filepath.Dir(p), "config.json")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			c = filepath.Join(p, "config.json")
		}
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
		tried = append(tried, c)
	}
	return "", fmt.Errorf("no Hugging Face config.json for the model of these artifacts (looked at %v): pass --hf-config path/to/config.json", tried)
}

// baseModel is the model the user gave prepare, as prepare recorded it.
func baseModel(man *manifest.Manifest) string {
	if o, ok := man.Options.(map[string]any); ok {
		if s, ok := o["base_model_name_or_path"].(string); ok {
			return s
		}
	}
	return ""
}

func (s *Source) checkConfig() error {
	c, m := s.Cfg, s.Man.Model
	switch {
	case c.NumLayers != m.Layers:
		return fmt.Errorf("%s: num_hidden_layers %d, the artifacts have %d layers: pass the model's own config with --hf-config", s.ConfigPath, c.NumLayers, m.Layers)
	case int64(c.HiddenSize) != m.Hidden:
		return fmt.Errorf("%s: hidden_size %d, the artifacts have %d: pass the model's own config with --hf-config", s.ConfigPath, c.HiddenSize, m.Hidden)
	case int64(c.VocabSize) != m.Vocab:
		return fmt.Errorf("%s: vocab_size %d, the artifacts have %d: pass the model's own config with --hf-config", s.ConfigPath, c.VocabSize, m.Vocab)
	case c.AttentionBias || c.MLPBias:
		return fmt.Errorf("%s: attention_bias/mlp_bias: export does not handle Linear biases yet", s.ConfigPath)
	}
	return nil
}

// findPieces locates the embedding, the norms and the Linears in the eval graph.
func (s *Source) findPieces(evalPath string) error {
	g := s.G
	for _, n := range g.P.Node {
		switch {
		case n.OpType == "Gather" && len(n.Input) == 2 && n.Input[1] == s.Man.Eval.Input(manifest.RoleInputIDs) && g.Initializer(n.Input[0]) != nil:
			s.Embed = n.Input[0]
		case (n.OpType == "SimplifiedLayerNormalization" || n.OpType == "RMSNormalization") && len(n.Input) >= 2 && g.Initializer(n.Input[1]) != nil:
			s.Norms = append(s.Norms, Norm{Weight: n.Input[1], Eps: ortgraph.AttrFloat(n, "epsilon", 1e-5)})
		}
	}
	if s.Embed == "" {
		return fmt.Errorf("%s: no embedding Gather of input_ids: not an ortq eval graph", evalPath)
	}
	s.DType = g.Initializer(s.Embed).DataType
	if want := 2*s.Man.Model.Layers + 1; len(s.Norms) != want {
		return fmt.Errorf("%s: %d RMSNorm nodes, a %d-layer Llama has %d: rerun `ortq prepare` with this ortq", evalPath, len(s.Norms), s.Man.Model.Layers, want)
	}
	// FindLinears only reads a graph; it runs on a copy so that the Linears it returns are
	// looked up again by name in g below, whatever a later pass might do to that copy.
	ctx, err := ortgraph.RunPasses(ortgraph.NewGraph(&ortgraph.Model{P: cloneModel(s.Eval.P), Dir: s.Eval.Dir}), nil, nil, passes.FindLinears)
	if err != nil {
		return fmt.Errorf("%s: %w", evalPath, err)
	}
	s.Linears = map[string]*passes.Linear{}
	byName := map[string]*onnxpb.NodeProto{}
	for _, n := range g.P.Node {
		byName[n.Name] = n
	}
	for _, l := range ortgraph.ResultOf[*passes.Linears](ctx, passes.FindLinears).All {
		cp := *l
		cp.Node = byName[l.Node.Name]
		s.Linears[l.Module()] = &cp
	}
	if s.Linears["lm_head"] == nil {
		s.Linears["lm_head"] = s.chunkedHead()
	}
	if s.Linears["lm_head"] == nil {
		return fmt.Errorf("%s: no lm_head Linear found", evalPath)
	}
	return nil
}

// chunkedHead finds lm_head in an eval graph whose loss is chunked (prepare --loss-chunks):
// there the head is one Gemm (transB 1) or MatMulNBits per block of the sequence, all on
// the same [vocab, hidden] weight, which FindLinears does not take for a Linear. The first
// one stands for all.
func (s *Source) chunkedHead() *passes.Linear {
	g, V, H := s.G, s.Man.Model.Vocab, s.Man.Model.Hidden
	for _, n := range g.P.Node {
		switch {
		case n.OpType == "Gemm" && len(n.Input) == 2 && ortgraph.AttrInt(n, "transB", 0) == 1 && ortgraph.AttrInt(n, "transA", 0) == 0:
			if t := g.Initializer(n.Input[1]); t != nil && len(t.Dims) == 2 && t.Dims[0] == V && t.Dims[1] == H {
				return &passes.Linear{Layer: -1, Kind: "lm_head", Node: n, Weight: n.Input[1], In: H, Out: V, WeightIsOutIn: true}
			}
		case n.OpType == "MatMulNBits" && ortgraph.AttrInt(n, "N", 0) == V && ortgraph.AttrInt(n, "K", 0) == H:
			return &passes.Linear{Layer: -1, Kind: "lm_head", Node: n, Weight: n.Input[1], In: H, Out: V, Prequantized: true}
		}
	}
	return nil
}
