// ollama_render renders an Ollama TEMPLATE (Go text/template) the way Ollama's chat endpoint does, so that kolo can
// check that a Modelfile TEMPLATE equals the Hugging Face chat template used in training. Standard library only
// (Go >= 1.18); built on demand by kolo_trainer/templates/gorender.py.
//
// What it reproduces (Ollama's server/routes.go ChatHandler + template/template.go):
//   - the Modelfile SYSTEM ("system" in the input) is prepended as a system message when the conversation does
//     not start with one;
//   - messages are collated: consecutive messages of the same role are merged with "\n\n"; .System is every
//     system message joined with "\n\n"; system messages STAY in .Messages;
//   - the template is parsed with Option("missingkey=zero") and Ollama's extra function "json";
//   - a template that uses .Messages is executed once with {System, Messages, Tools, Response: "", Think,
//     ThinkLevel, IsThinkSet, Query, Document, Instruction};
//   - thinking: Ollama gives a model the "thinking" capability when its TEMPLATE reads .Thinking inside a range
//     over .Messages with text on both sides (thinking.InferTags, server/images.go), and /api/chat then renders
//     with think on unless the request says otherwise (server/routes.go: req.Think defaults to true, so Think=true,
//     ThinkLevel="medium", IsThinkSet=true). "think" in the input (true/false) plays the request's think value.
// Ollama's legacy path (templates with only .System/.Prompt/.Response, executed once per exchange) is not
// reproduced: every kolo template uses .Messages, and such a template is reported as an error instead of being
// rendered differently from Ollama.
//
// Input on stdin, one JSON object:
//   {"template": "...", "system": "...", "messages": [{"role": "...", "content": "..."}]}  -> the rendering on stdout
//   {"template": "...", "cases": [{"system": "...", "messages": [...]}, ...]}              -> JSON {"outputs": [...]}
// A parse or execution error exits with status 1 and a one-line message on stderr.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
)

// Message mirrors the fields of Ollama's api.Message that templates read.
type Message struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	Thinking  string `json:"thinking,omitempty"`
	Images    []any  `json:"images,omitempty"`
	ToolCalls []any  `json:"tool_calls,omitempty"`
	ToolName  string `json:"tool_name,omitempty"`
}

type renderCase struct {
	System   string    `json:"system"`
	Messages []Message `json:"messages"`
	Think    *bool     `json:"think"`
}

type input struct {
	Template string       `json:"template"`
	System   string       `json:"system"`
	Messages []Message    `json:"messages"`
	Cases    []renderCase `json:"cases"`
	Think    *bool        `json:"think"`
}

var funcs = template.FuncMap{
	// Same behaviour as Ollama's "json": marshal, ignore the error.
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
}

// identifiers collects field and variable names used anywhere in the tree (lower-cased), like Ollama's Vars().
func identifiers(n parse.Node, out map[string]bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			identifiers(c, out)
		}
	case *parse.ActionNode:
		identifiers(n.Pipe, out)
	case *parse.TemplateNode:
		identifiers(n.Pipe, out)
	case *parse.IfNode:
		identifiers(&n.BranchNode, out)
	case *parse.RangeNode:
		identifiers(&n.BranchNode, out)
	case *parse.WithNode:
		identifiers(&n.BranchNode, out)
	case *parse.BranchNode:
		identifiers(n.Pipe, out)
		identifiers(n.List, out)
		if n.ElseList != nil {
			identifiers(n.ElseList, out)
		}
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				identifiers(a, out)
			}
		}
	case *parse.FieldNode:
		for _, id := range n.Ident {
			out[strings.ToLower(id)] = true
		}
	case *parse.VariableNode:
		for _, id := range n.Ident {
			out[strings.ToLower(id)] = true
		}
	case *parse.ChainNode:
		identifiers(n.Node, out)
		for _, id := range n.Field {
			out[strings.ToLower(id)] = true
		}
	}
}

// thinkingTags reports whether the template gives the model Ollama's thinking capability. Same rule as Ollama's
// thinking.InferTags, re-implemented here (the renderer is stdlib-only): a .Thinking field read inside a range whose
// pipeline reads .Messages; the innermost list around it must start and end with text (the opening and closing
// tags, whitespace-trimmed, both non-empty).
func thinkingTags(n parse.Node, inMessages bool, list *parse.ListNode, found *bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			thinkingTags(c, inMessages, n, found)
		}
	case *parse.ActionNode:
		thinkingTags(n.Pipe, inMessages, list, found)
	case *parse.IfNode:
		thinkingBranch(&n.BranchNode, inMessages, list, found)
	case *parse.WithNode:
		thinkingBranch(&n.BranchNode, inMessages, list, found)
	case *parse.RangeNode:
		ids := map[string]bool{}
		identifiers(n.Pipe, ids)
		thinkingBranch(&n.BranchNode, ids["messages"], list, found)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				thinkingTags(a, inMessages, list, found)
			}
		}
	case *parse.FieldNode:
		if inMessages && len(n.Ident) > 0 && n.Ident[0] == "Thinking" && list != nil && len(list.Nodes) > 0 {
			first, ok1 := list.Nodes[0].(*parse.TextNode)
			last, ok2 := list.Nodes[len(list.Nodes)-1].(*parse.TextNode)
			// As in Ollama, the last .Thinking visited decides.
			*found = ok1 && ok2 && strings.TrimSpace(string(first.Text)) != "" && strings.TrimSpace(string(last.Text)) != ""
		}
	}
}

func thinkingBranch(b *parse.BranchNode, inMessages bool, list *parse.ListNode, found *bool) {
	thinkingTags(b.Pipe, inMessages, list, found)
	thinkingTags(b.List, inMessages, list, found)
	if b.ElseList != nil {
		thinkingTags(b.ElseList, inMessages, list, found)
	}
}

// collate merges consecutive same-role messages and gathers the system prompt, as Ollama does.
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == m.Role && m.Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + m.Content
		} else {
			collated = append(collated, &m)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func render(tmpl *template.Template, modelfileSystem string, msgs []Message, thinks bool, think *bool) (string, error) {
	// Ollama's chat handler: the Modelfile SYSTEM applies only when the request brings no system message first.
	if modelfileSystem != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]Message{{Role: "system", Content: modelfileSystem}}, msgs...)
	}
	system, collated := collate(msgs)
	if thinks && think == nil {
		t := true
		think = &t
	}
	thinkVal, thinkLevel := false, ""
	if think != nil && *think {
		thinkVal, thinkLevel = true, "medium"
	}
	var b bytes.Buffer
	err := tmpl.Execute(&b, map[string]any{
		"System":      system,
		"Messages":    collated,
		"Tools":       nil,
		"Response":    "",
		"Think":       thinkVal,
		"ThinkLevel":  thinkLevel,
		"IsThinkSet":  think != nil,
		"Query":       "",
		"Document":    "",
		"Instruction": "",
	})
	return b.String(), err
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ollama_render: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fail("invalid JSON input: %v", err)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
	if err != nil {
		fail("template does not parse: %v", err)
	}
	vars := map[string]bool{}
	for _, t := range tmpl.Templates() {
		if t.Tree != nil {
			identifiers(t.Tree.Root, vars)
		}
	}
	if !vars["messages"] {
		fail("template does not use .Messages; only Messages-style templates are rendered (Ollama's legacy " +
			".Prompt/.Response path is not reproduced)")
	}
	thinks := false
	thinkingTags(tmpl.Tree.Root, false, nil, &thinks)
	if in.Cases == nil {
		out, err := render(tmpl, in.System, in.Messages, thinks, in.Think)
		if err != nil {
			fail("template execution failed: %v", err)
		}
		os.Stdout.WriteString(out)
		return
	}
	outputs := make([]string, len(in.Cases))
	for i, c := range in.Cases {
		out, err := render(tmpl, c.System, c.Messages, thinks, c.Think)
		if err != nil {
			fail("case %d: template execution failed: %v", i+1, err)
		}
		outputs[i] = out
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"outputs": outputs, "thinking": thinks}); err != nil {
		fail("writing output: %v", err)
	}
}
