"""Judges: anything that turns (image, prompt) pairs into `Judgement`s, chosen by `judge.type` in config.

- `question`: the paper's question, system prompt and answer parsing, shared by every judge so that a
  verdict and a soft score mean the same thing whoever gives them (pure);
- `base`: the `Judge` protocol and `build_judge`, the one factory for `judge.type` (the training judge and
  the guard's reference);
- `inprocess`: self (the model's own understanding branch, the paper), python (user code), noisy (wraps
  another judge to corrupt its verdicts on purpose);
- `hf_vlm`: any transformers vision-language model from a local directory;
- `vllm`: a VLM behind vLLM's OpenAI-compatible server, started from its own Python environment.

Built-in judges (ShapesWorld's exact checker, `shapes_checker`) come from `rayunify.builtins`. No ray or
deepspeed here: the judge actor wraps one of these. This file imports nothing, so `judges.question` stays
as light as it is.
"""
