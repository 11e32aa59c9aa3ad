#!/usr/bin/python3
"""Chat templates (coordinator/chat_template.c) against known renderings.

  test_chat_template.py CHAT_TEMPLATE_DUMP

1. References: for each family, a fixed conversation (system + user + assistant + user, and the
   same without the system message), add_generation_prompt on, renders exactly as the string
   written below from the model card's documented format (minus the leading BOS, which the
   tokenizer adds: see coordinator/chat_template.h).
2. Detection: each real template under templates/ (SOURCES.md cites them) is recognised as its
   family; templates of other families fall back to plain, or are refused when strict.
3. Independent reference: each real template rendered by python3-jinja2 in Hugging Face's
   environment gives the C rendering (with the leading BOS), on several conversations,
   with and without add_generation_prompt.
4. Errors name the message index and field: bad roles, missing contents, broken alternation.
5. The template source is read from model files (model_tokenizer_chat_template): GGUF's
   tokenizer.chat_template; a Hugging Face directory's tokenizer_config.json chat_template as a
   string or as a list of {name, template} (the "default" one), else chat_template.jinja.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import jinja2
import jinja2.ext
import jinja2.sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "tokenizer"))
import gguf_write  # noqa: E402
from gguf_to_tokenizer_json import convert, write_json  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402
from safetensors_write import write_hf  # noqa: E402

DUMP = sys.argv[1]
FAILURES = []

SYS = {"role": "system", "content": "You are a helpful assistant."}
CONV = [{"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there. How can I help?"},
        {"role": "user", "content": "What is 2+2?"}]

# family: (bos, eos, rendering with the system message, rendering without)
REFERENCES = {
    # Llama 2 chat (huggingface.co/blog/llama2 "How to prompt Llama 2"; Meta's chat_completion):
    # <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]
    "llama2": ("<s>", "</s>",
               "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. How can I help? "
               "</s><s>[INST] What is 2+2? [/INST]",
               "[INST] Hello! [/INST] Hi there. How can I help? </s><s>[INST] What is 2+2? [/INST]"),
    # Meta Llama 3 model card: <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n
    # {system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>
    # <|start_header_id|>assistant<|end_header_id|>\n\n
    "llama3": ("<|begin_of_text|>", "<|eot_id|>",
               "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nHi there. How can I help?<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n",
               "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nHi there. How can I help?<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    # ChatML (OpenHermes 2.5 model card): <|im_start|>{role}\n{content}<|im_end|>\n ...
    # <|im_start|>assistant\n
    "chatml": ("<s>", "<|im_end|>",
               "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
               "<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
               "<|im_start|>assistant\n",
               "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n"
               "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
    # Code Llama 70B Instruct model card: <s>Source: system\n\n {system} <step> Source: user\n\n
    # {user} <step> Source: assistant\n\n {answer} <step> ... Source: assistant\nDestination: user\n\n
    "codellama": ("<s>", "</s>",
                  "Source: system\n\n You are a helpful assistant. <step> Source: user\n\n Hello! <step> "
                  "Source: assistant\n\n Hi there. How can I help? <step> Source: user\n\n What is 2+2? <step> "
                  "Source: assistant\nDestination: user\n\n ",
                  "Source: user\n\n Hello! <step> Source: assistant\n\n Hi there. How can I help? <step> "
                  "Source: user\n\n What is 2+2? <step> Source: assistant\nDestination: user\n\n "),
    # Mistral 7B Instruct model card: <s>[INST] {user} [/INST]{answer}</s>[INST] {user} [/INST];
    # no system role: it opens the first user message, then "\n\n"
    "mistral": ("<s>", "</s>",
                "[INST] You are a helpful assistant.\n\nHello! [/INST]Hi there. How can I help?</s>"
                "[INST] What is 2+2? [/INST]",
                "[INST] Hello! [/INST]Hi there. How can I help?</s>[INST] What is 2+2? [/INST]"),
    # Zephyr 7B beta model card: <|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n
    "zephyr": ("<s>", "</s>",
               "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n"
               "<|assistant|>\nHi there. How can I help?</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n",
               "<|user|>\nHello!</s>\n<|assistant|>\nHi there. How can I help?</s>\n"
               "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"),
    # Stanford Alpaca (tatsu-lab/stanford_alpaca README): {preamble}\n\n### Instruction:\n{instruction}
    # \n\n### Response:\n, the preamble being the system message; answers end with EOS
    "alpaca": ("<s>", "</s>",
               "You are a helpful assistant.\n\n### Instruction:\nHello!\n\n### Response:\nHi there. How can I help?"
               "</s>\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n",
               "### Instruction:\nHello!\n\n### Response:\nHi there. How can I help?</s>\n\n"
               "### Instruction:\nWhat is 2+2?\n\n### Response:\n"),
    # The documented fallback (docs/chat-templates.md)
    "plain": ("<s>", "</s>",
              "System: You are a helpful assistant.\nUser: Hello!\nAssistant: Hi there. How can I help?\n"
              "User: What is 2+2?\nAssistant:",
              "User: Hello!\nAssistant: Hi there. How can I help?\nUser: What is 2+2?\nAssistant:"),
}

# template file: (family, bos, eos); None: not recognised
TEMPLATES = {
    "llama-2-chat.jinja": ("llama2", "<s>", "</s>"),
    "codellama-7b-instruct.jinja": ("llama2", "<s>", "</s>"),
    "codellama-70b-instruct.jinja": ("codellama", "<s>", "</s>"),
    "llama-3-instruct.jinja": ("llama3", "<|begin_of_text|>", "<|eot_id|>"),
    "chatml-openhermes-2.5.jinja": ("chatml", "<s>", "<|im_end|>"),
    "mistral-7b-instruct-v0.1.jinja": ("mistral", "<s>", "</s>"),
    "mistral-7b-instruct-v0.2.jinja": ("mistral", "<s>", "</s>"),
    "zephyr-7b-beta.jinja": ("zephyr", "<s>", "</s>"),
    "alpaca.jinja": ("alpaca", "<s>", "</s>"),
    "gemma-7b-it.jinja": (None, "<bos>", "<eos>"),
    "phi-3-mini-instruct.jinja": (None, "<s>", "<|endoftext|>"),
    "deepseek-coder-instruct.jinja": (None, "<｜begin▁of▁sentence｜>", "<|EOT|>"),
}

# Conversations for the Jinja comparison: the fixed one, whitespace the templates strip, one turn.
PADDED = [{"role": "system", "content": "  Be brief. \n"},
          {"role": "user", "content": "\n  Hi  "},
          {"role": "assistant", "content": "   I am an assistant   "},
          {"role": "user", "content": "Another question\t"}]
JINJA_CONVERSATIONS = [[SYS] + CONV, CONV, PADDED, PADDED[1:], [SYS, CONV[0]], [CONV[0]], CONV[:2]]


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def render(source, messages, bos="<s>", eos="</s>", strict=False, gen=True):
    """(name, text) on success, ("error", "status\\ndetail") on failure."""
    req = {"source": source, "bos": bos, "eos": eos, "strict": strict, "add_generation_prompt": gen,
           "messages": messages}
    r = subprocess.run([DUMP], input=json.dumps(req).encode(), capture_output=True, timeout=30)
    if r.returncode not in (0, 1):
        raise RuntimeError("chat_template_dump exited %d: %s" % (r.returncode, r.stderr.decode()))
    name, _, text = r.stdout.decode().partition("\n")
    return name, text


def template(name):
    with open(os.path.join(HERE, "templates", name), encoding="utf-8") as f:
        return f.read()


def jinja_render(source, messages, bos, eos, gen):
    """As transformers' apply_chat_template renders it; None if the template raises."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source).render(messages=messages, bos_token=bos, eos_token=eos,
                                              add_generation_prompt=gen)
    except jinja2.exceptions.TemplateError:
        return None


def test_references():
    for family, (bos, eos, with_sys, without_sys) in REFERENCES.items():
        for messages, want in (([SYS] + CONV, with_sys), (CONV, without_sys)):
            name, text = render(family, messages, bos, eos)
            check((name, text) == (family, want),
                  "%s reference (%d messages): got %r %r, want %r" % (family, len(messages), name, text, want))


def test_detection():
    for path, (family, bos, eos) in TEMPLATES.items():
        src = template(path)
        name, text = render(src, CONV, bos, eos)
        check(name == (family or "plain"), "%s detected as %r, want %r" % (path, name, family or "plain"))
        name, text = render(src, CONV, bos, eos, strict=True)
        if family:
            check(name == family, "%s strict: %r %r" % (path, name, text))
        else:
            check(name == "error" and text.startswith("unsupported") and "not one of the recognised" in text,
                  "%s strict must refuse: %r %r" % (path, name, text))
    name, text = render(None, CONV)
    check(name == "plain" and text == REFERENCES["plain"][3], "no template: %r %r" % (name, text))
    name, text = render(None, CONV, strict=True)
    check(name == "error" and "has no chat template" in text, "no template, strict: %r %r" % (name, text))
    name, text = render("{{ messages }}", CONV, strict=True)
    check(name == "error" and '"{{ messages }}"' in text, "unknown template, strict: %r %r" % (name, text))


def test_jinja():
    for path, (family, bos, eos) in TEMPLATES.items():
        if not family:
            continue
        src = template(path)
        for messages in JINJA_CONVERSATIONS:
            # Code Llama 70B's template appends the generation prompt even when not asked.
            for gen in ((True,) if family == "codellama" else (True, False)):
                want = jinja_render(src, messages, bos, eos, gen)
                name, text = render(src, messages, bos, eos, gen=gen)
                if want is None:  # the template refuses it (Mistral has no system role)
                    check(family == "mistral" and messages[0]["role"] == "system",
                          "%s: jinja2 refused %r" % (path, messages))
                    continue
                if want.startswith(bos):
                    want = want[len(bos):]
                check((name, text) == (family, want), "%s (gen=%s) on %r: C %r %r, jinja2 %r"
                      % (path, gen, messages, name, text, want))


def expect_error(source, messages, needle, what):
    name, text = render(source, messages)
    check(name == "error" and text.startswith("invalid argument") and needle in text,
          "%s: want an error with %r, got %r %r" % (what, needle, name, text))


def test_errors():
    for family in REFERENCES:
        expect_error(family, [SYS, {"role": "tool", "content": "x"}], 'messages[1].role: "tool" is not a role',
                     family + " unknown role")
        expect_error(family, [{"role": "user"}], "messages[0].content: missing", family + " no content")
        expect_error(family, [{"content": "x"}], "messages[0].role: missing", family + " no role")
        expect_error(family, [], "messages: empty", family + " no messages")
    for family in ("llama2", "mistral", "codellama", "alpaca"):
        expect_error(family, [CONV[0], CONV[0]], 'messages[1].role: "user" where "assistant" was expected',
                     family + " user twice")
        expect_error(family, [SYS, CONV[1]], 'messages[1].role: "assistant" where "user" was expected',
                     family + " assistant first")
        expect_error(family, CONV[:2] + [SYS], 'messages[2].role: "system" can only be the first',
                     family + " late system")
    for family in ("llama2", "mistral"):
        expect_error(family, [SYS], "messages: the %s chat template needs a user message" % family,
                     family + " system only")
    for family in ("llama3", "chatml", "zephyr", "plain"):  # any order
        name, _ = render(family, [CONV[1], SYS, CONV[0], CONV[0]])
        check(name == family, "%s takes any order: %r" % (family, name))
    name, text = render("llama2", CONV[:2], gen=False)
    check(text == "[INST] Hello! [/INST] Hi there. How can I help? </s>", "llama2 ending with assistant: %r" % text)


def model_template(path):
    """(family, source) of the model's template, ("none", "") or ("error", detail); the rendering
    of a short conversation with the vocabulary's BOS and EOS, and where its encoding has BOS
    ids, are checked here."""
    r = subprocess.run([DUMP, "--model", path], capture_output=True, timeout=60)
    name, _, rest = r.stdout.decode().partition("\n")
    if name in ("none", "error"):
        return name, rest
    rendered, _, rest = rest.partition("\n")
    bos_at, _, source = rest.partition("\n")
    bos_at = [int(x) for x in bos_at.split()]
    # One BOS in front (the tokenizer's), and one for each BOS text inside the prompt (llama2's
    # later turns): the rendering never doubles the leading BOS.
    check(bos_at[:1] == [0] and 1 not in bos_at and len(bos_at) == 1 + bytes.fromhex(rendered).count(b"<s>"),
          "%s: BOS ids at %r" % (path, bos_at))
    want = jinja_render(source, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                                 {"role": "user", "content": "Q"}], "<s>", "</s>", True)
    want = want[len("<s>"):] if want.startswith("<s>") else want
    check(bytes.fromhex(rendered).decode() == want,
          "%s: rendered with the vocabulary's BOS/EOS as %r, jinja2 %r" % (path, bytes.fromhex(rendered), want))
    return name, source


def test_model_files(work):
    cfg = LlamaConfig(dim=32, hidden_dim=48, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=300)
    weights = random_model(cfg, 3)
    chatml, llama3 = template("chatml-openhermes-2.5.jinja"), template("llama-3-instruct.jinja")
    tensors = gguf_write.llama_tensors(cfg, weights, "F32")[0]
    llama2 = template("llama-2-chat.jinja")
    for name, extra, want in (("with.gguf", [("tokenizer.chat_template", gguf_write.STRING, chatml)], ("chatml", chatml)),
                              ("llama2.gguf", [("tokenizer.chat_template", gguf_write.STRING, llama2)], ("llama2", llama2)),
                              ("without.gguf", [], ("none", "")),
                              ("bad.gguf", [("tokenizer.chat_template", gguf_write.UINT32, 7)], None)):
        path = os.path.join(work, name)
        gguf_write.write_gguf(path, gguf_write.llama_metadata(cfg) + extra, tensors)
        got = model_template(path)
        if want:
            check(got == want, "%s: %r" % (name, got))
        else:
            check(got[0] == "error" and "tokenizer.chat_template" in got[1], "%s: %r" % (name, got))
    meta = {k: (v[1] if t == gguf_write.ARRAY else v) for k, t, v in gguf_write.llama_tokenizer_metadata(cfg.vocab_size)}
    tok_json, config = convert(meta)
    cases = (("string", chatml, None, ("chatml", chatml)),
             ("list", [{"name": "tool_use", "template": chatml}, {"name": "default", "template": llama3}], None,
              ("llama3", llama3)),
             ("list-without-default", [{"name": "tool_use", "template": chatml}], None, ("none", "")),
             ("jinja-file", None, llama3, ("llama3", llama3)),
             ("none", None, None, ("none", "")),
             ("number", 5, None, None))
    for name, in_config, jinja_file, want in cases:
        d = os.path.join(work, name)
        write_hf(d, cfg, weights)
        write_json(os.path.join(d, "tokenizer.json"), tok_json)
        write_json(os.path.join(d, "tokenizer_config.json"),
                   dict(config, chat_template=in_config) if in_config is not None else config)
        if jinja_file:
            with open(os.path.join(d, "chat_template.jinja"), "w", encoding="utf-8") as f:
                f.write(jinja_file)
        got = model_template(d)
        if want:
            check(got == want, "HF %s: %r" % (name, got))
        else:
            check(got[0] == "error" and "chat_template is number" in got[1], "HF %s: %r" % (name, got))


def main():
    test_references()
    test_detection()
    test_jinja()
    test_errors()
    work = tempfile.mkdtemp(prefix="chat_template_")
    try:
        test_model_files(work)
    finally:
        shutil.rmtree(work)
    if FAILURES:
        print("%d failure(s)" % len(FAILURES))
        return 1
    print("chat templates: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
