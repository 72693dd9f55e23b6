"""The words simulated users wrap around corpus texts, with paraphrase variation.

What it knows: reasoning-elicitation phrasings (chain-of-thought requests, and
answer-format demands that never say "step by step"), grading rubrics, capability-sweep
instructions per domain, long-context question templates, how students, developers,
writers and casual users phrase requests and follow-ups, batch-pipeline templates, plain
evaluation-harness formats, viral questions, system prompts, and a few composed payloads
(stack traces, invoices, tool-use tasks) that the corpora do not contain.

Templates are slot-based: ``[[a|b|c]]`` picks one alternative (an empty one is allowed),
``{q}``, ``{doc}``… are filled by :func:`fill`, and :func:`perturb` adds casing changes
and typos. So an operator's wrapper is a family of strings, not one literal.

What it does not know: which account uses which phrasing or when (see ``simulator``), and
nothing about the detector.

Example::

    rng = np.random.default_rng(0)
    w = Wrapper.pick(rng, families=("cot", "structured"), k=3)
    print(w.apply("What is 17 * 23?", rng))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

PhrasingFamily = Literal[
    "cot",
    "structured",
    "cot_wrap",
    "rubric",
    "sweep_math",
    "sweep_code",
    "sweep_reasoning",
    "sweep_longdoc",
    "sweep_agentic",
    "longctx_question",
    "student",
    "student_followup",
    "casual_followup",
    "dev_question",
    "dev_followup",
    "writer",
    "writer_followup",
    "batch",
    "eval_plain",
    "viral",
    "system_organic",
    "system_harvest",
]
Placement = Literal["prefix", "suffix", "either"]

#: Families whose phrasings ask the model to expose its reasoning (or a structured form of it).
ELICITATION_FAMILIES: tuple[PhrasingFamily, ...] = ("cot", "structured", "cot_wrap")

_ALT = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Phrasing:
    """One template: ``[[a|b]]`` alternations and ``{slot}`` placeholders."""

    key: str
    family: PhrasingFamily
    template: str

    @property
    def has_payload_slot(self) -> bool:
        """True if the template says where the payload goes (``{q}`` or ``{doc}``)."""
        return "{q}" in self.template or "{doc}" in self.template

    @property
    def says_step_by_step(self) -> bool:
        """True if any realization may contain the words "step by step"."""
        return bool(re.search(r"step[ -]by[ -]step", self.template, re.IGNORECASE))

    def render(self, rng: np.random.Generator, noise: float = 0.0, **slots: str) -> str:
        """Realize the alternations, add typos (to the template words only), fill the slots."""
        return fill(perturb(realize(self.template, rng), rng, noise), **slots)


def realize(template: str, rng: np.random.Generator) -> str:
    """Pick one alternative in every ``[[a|b|c]]`` group."""

    def pick(m: re.Match[str]) -> str:
        options = m.group(1).split("|")
        return options[int(rng.integers(len(options)))]

    return _ALT.sub(pick, template)


def fill(text: str, **slots: str) -> str:
    """Replace ``{name}`` for the names given; other braces (JSON, ``\\boxed{}``) stay."""
    if not slots:
        return text
    return _SLOT.sub(lambda m: slots.get(m.group(1), m.group(0)), text)


def perturb(text: str, rng: np.random.Generator, noise: float) -> str:
    """Human sloppiness: lower-casing, a dropped final period, one or two typos.

    ``noise`` in [0, 1] scales how likely each change is; 0 returns ``text`` unchanged.
    """
    if noise <= 0 or not text:
        return text
    if rng.random() < 0.5 * noise:
        text = text.lower()
    elif rng.random() < 0.3 * noise:
        text = text[0].lower() + text[1:]
    if text.endswith(".") and rng.random() < 0.5 * noise:
        text = text[:-1]
    n_typos = int(rng.random() < noise) + int(rng.random() < 0.3 * noise)
    for _ in range(n_typos):
        words = [m for m in re.finditer(r"[A-Za-z]{4,}", text)]
        if not words:
            break
        m = words[int(rng.integers(len(words)))]
        w = m.group(0)
        i = int(rng.integers(1, len(w) - 1))
        op = int(rng.integers(3))
        if op == 0:
            w2 = w[:i] + w[i + 1] + w[i] + w[i + 2 :]  # swap two letters
        elif op == 1:
            w2 = w[:i] + w[i + 1 :]  # drop a letter
        else:
            w2 = w[:i] + w[i] + w[i:]  # double a letter
        text = text[: m.start()] + w2 + text[m.end() :]
    return text


def wrap(
    instruction: str, payload: str, rng: np.random.Generator, placement: Placement = "either"
) -> str:
    """Put an instruction before or after a payload with a varied separator."""
    if placement == "either":
        placement = "prefix" if rng.random() < 0.5 else "suffix"
    sep = ("\n\n", "\n", " ", "\n\n")[int(rng.integers(4))]
    if placement == "prefix":
        return f"{instruction}{sep}{payload}"
    return f"{payload}{sep}{instruction}"


# --------------------------------------------------------------------------- the phrasings

_P: list[tuple[str, PhrasingFamily, str]] = [
    # ---- chain-of-thought elicitation (instructions; placed before or after the problem)
    ("cot.think_sbs", "cot", "[[Let's|Let us|Lets]] think step by step."),
    (
        "cot.show_work",
        "cot",
        "Show [[all of |]]your work[[.| please.|, then box the final answer.]]",
    ),
    (
        "cot.reason_first",
        "cot",
        "Explain your reasoning before [[answering|giving the final answer|you answer]].",
    ),
    (
        "cot.walk_me",
        "cot",
        "Walk me through [[how you'd solve this|your solution|the solution]] "
        "[[one step at a time|in detail|carefully|from start to finish]].",
    ),
    ("cot.justify", "cot", "Think carefully and justify [[each|every]] step."),
    (
        "cot.outline_first",
        "cot",
        "First outline your approach, then [[solve it|carry it out|execute the plan]].",
    ),
    (
        "cot.rationale_boxed",
        "cot",
        "Give the rationale, then the final answer in \\boxed{}.",
    ),
    (
        "cot.reason_thoroughly",
        "cot",
        "Reason through the problem [[thoroughly|in detail|rigorously]] before committing "
        "to an answer.",
    ),
    ("cot.chain", "cot", "Before answering, write out your [[full|complete]] chain of thought."),
    (
        "cot.subproblems",
        "cot",
        "Break the problem into smaller sub-problems and solve each one [[in turn|separately]].",
    ),
    (
        "cot.explain_each",
        "cot",
        "Explain [[each|every]] step of your [[derivation|calculation|logic]] "
        "[[clearly|in detail]].",
    ),
    (
        "cot.not_just_answer",
        "cot",
        "Don't just give me the answer[[ —|,|.]] I want to see the full derivation.",
    ),
    (
        "cot.methodical",
        "cot",
        "Please solve this [[methodically|systematically]], showing all intermediate "
        "[[results|calculations|values]].",
    ),
    ("cot.think_aloud", "cot", "Think out loud as you work through this."),
    (
        "cot.line_by_line",
        "cot",
        "Work through it line by line and double-check each [[step|deduction]] before the "
        "final answer.",
    ),
    (
        "cot.rigorous",
        "cot",
        "Provide a [[detailed|complete]], rigorous solution with justification for every claim.",
    ),
    (
        "cot.restate",
        "cot",
        "Start by restating the problem in your own words, then reason [[your way |]]to the "
        "answer.",
    ),
    (
        "cot.facts_first",
        "cot",
        "List the relevant facts, reason about them, and only then answer.",
    ),
    (
        "cot.beginner",
        "cot",
        "Solve this and explain the logic behind each [[step|move]] so a beginner could follow.",
    ),
    ("cot.deep_breath", "cot", "Take a deep breath and work on this problem step-by-step."),
    (
        "cot.verify",
        "cot",
        "Verify your answer at the end by checking it against the original [[conditions|problem]].",
    ),
    (
        "cot.multi_approach",
        "cot",
        "Consider [[several|multiple]] approaches, compare them, then use the best one to "
        "solve it.",
    ),
    (
        "cot.reflect",
        "cot",
        "Reflect on possible mistakes in your reasoning before [[finalizing|you finalize]].",
    ),
    (
        "cot.wrong_options",
        "cot",
        "Explain why each wrong option is wrong and why the correct one is right.",
    ),
    (
        "cot.tutor",
        "cot",
        "Teach me how to solve this[[, as a tutor would| like a patient teacher]]: reason it "
        "out fully.",
    ),
    ("cot.first_principles", "cot", "Derive the answer from first principles."),
    (
        "cot.be_sure",
        "cot",
        "Let's work this out in a step by step way to be sure we have the right answer.",
    ),
    (
        "cot.thorough",
        "cot",
        "Give a thorough explanation, not just the [[result|final number|answer]].",
    ),
    ("cot.numbered", "cot", "Use careful, explicit reasoning; number each step."),
    (
        "cot.scratchpad",
        "cot",
        "Write a scratchpad of your thinking first, then the final answer.",
    ),
    (
        "cot.self_critique",
        "cot",
        "Solve it, then critique your own solution and revise it if needed.",
    ),
    ("cot.thought_process", "cot", "Explain your thought process in [[detail|depth]]."),
    (
        "cot.why_not_what",
        "cot",
        "I care more about the why than the what[[:|,]] explain how you get there.",
    ),
    (
        "cot.slow_down",
        "cot",
        "[[Slow down and|Take your time and]] reason carefully; accuracy matters more than speed.",
    ),
    # ---- answer-format demands: structured reasoning without saying "step by step"
    (
        "fmt.xml_reasoning",
        "structured",
        "Respond in this format:\n<reasoning>...</reasoning>\n<answer>...</answer>",
    ),
    (
        "fmt.json_reasoning",
        "structured",
        'Return JSON: {"reasoning": "<your full reasoning>", "answer": "<final answer>"}',
    ),
    ("fmt.thought_final", "structured", "Format:\nThought: ...\nFinal Answer: ..."),
    (
        "fmt.think_tags",
        "structured",
        "Put your reasoning inside <think></think> tags and the final answer inside "
        "<answer></answer> tags.",
    ),
    (
        "fmt.analysis_conclusion",
        "structured",
        "Answer with two sections: 'Analysis' ([[detailed|thorough]]) and 'Conclusion' (one line).",
    ),
    (
        "fmt.deductions",
        "structured",
        "Output a numbered list of deductions followed by 'ANSWER: <value>'.",
    ),
    (
        "fmt.five_part",
        "structured",
        "Structure your reply as: 1) Understanding the problem 2) Plan 3) Execution "
        "4) Verification 5) Final answer.",
    ),
    (
        "fmt.json_steps",
        "structured",
        'Respond only with valid JSON matching {"steps": [string], "final_answer": string}.',
    ),
    ("fmt.rationale_answer", "structured", "Use the format 'Rationale: <text>\\nAnswer: <text>'."),
    (
        "fmt.solution_block",
        "structured",
        "Wrap the derivation in a ```solution``` block and give the result on the last line "
        "as 'Final: X'.",
    ),
    (
        "fmt.yaml",
        "structured",
        "Give your answer as YAML with keys `analysis`, `intermediate_results`, `answer`.",
    ),
    (
        "fmt.md_sections",
        "structured",
        "First a section titled '## Approach', then '## Solution', then '## Answer'.",
    ),
    (
        "fmt.scratchpad_tags",
        "structured",
        "Reply with <scratchpad> for your working and <final> for the answer only.",
    ),
    (
        "fmt.table",
        "structured",
        "Present the solution as a markdown table (Step | Operation | Result), then the answer.",
    ),
    (
        "fmt.premises",
        "structured",
        "Respond as: PREMISES (bullet list), INFERENCES (each citing premises), ANSWER.",
    ),
    # ---- elicitation templates that place the problem themselves
    ("wrap.qa_sbs", "cot_wrap", "Question: {q}\n\nAnswer: Let's think step by step."),
    (
        "wrap.worked",
        "cot_wrap",
        "Problem:\n{q}\n\nProvide a complete worked solution and state the final answer "
        "[[clearly|at the end|in bold]].",
    ),
    (
        "wrap.qa_reason",
        "cot_wrap",
        "Q: {q}\nA: Let's [[reason|think]] [[about this|through this]] carefully.",
    ),
    (
        "wrap.task_md",
        "cot_wrap",
        "### Task\n{q}\n\n### Instructions\nReason [[carefully|rigorously]], show intermediate "
        "steps, and end with the final answer.",
    ),
    (
        "wrap.detailed",
        "cot_wrap",
        "Here's a problem I'd like a [[detailed|thorough|fully explained]] solution for:\n\n{q}",
    ),
    (
        "wrap.expert",
        "cot_wrap",
        "As an expert, solve the following and explain every inference you make.\n\n{q}",
    ),
    # ---- grading / rubric requests
    (
        "rubric.self_grade",
        "rubric",
        "Solve the following, then grade your own solution on a 1-10 rubric (correctness, "
        "rigor, clarity), justifying each score.\n\n{q}",
    ),
    (
        "rubric.grade_answer",
        "rubric",
        "Grade this answer on a 1-10 rubric and explain every deduction.\n\nQuestion: {q}\n"
        "Proposed answer: {a}",
    ),
    (
        "rubric.student_answer",
        "rubric",
        "A student answered {a} to the problem below. Is this correct? Give a score out of 10, "
        "a detailed critique, then the correct solution.\n\n{q}",
    ),
    (
        "rubric.scheme",
        "rubric",
        "You are grading submissions. Rubric: correctness (0-5), reasoning quality (0-3), "
        "presentation (0-2). Score the response below and write feedback.\n\nProblem: {q}\n"
        "Response: {a}",
    ),
    (
        "rubric.marking_scheme",
        "rubric",
        "Write a marking scheme for this problem, then a model answer that would earn full "
        "marks.\n\n{q}",
    ),
    (
        "rubric.compare",
        "rubric",
        "Two candidate answers to the question below are {a} and {b}. Which is right, and why? "
        "Score both from 1 to 10.\n\n{q}",
    ),
    (
        "rubric.letter_grade",
        "rubric",
        "Evaluate the following reasoning for errors and give it a grade (A-F) with "
        "justification.\n\nQuestion: {q}\nReasoning: {a}",
    ),
    (
        "rubric.three_solutions",
        "rubric",
        "Produce three solutions of varying quality to this problem and grade each against a "
        "rubric.\n\n{q}",
    ),
    # ---- capability-sweep instructions, paraphrased, per domain
    ("sweep.math.solve", "sweep_math", "[[Solve|Work out|Find the answer to]]: {q}"),
    (
        "sweep.math.full",
        "sweep_math",
        "[[Compute|Determine]] the answer to this math problem and explain the method.\n\n{q}",
    ),
    ("sweep.math.exam", "sweep_math", "Exam question ([[10|12|15]] marks):\n{q}"),
    ("sweep.math.proof", "sweep_math", "Give a complete, rigorous solution.\n\n{q}"),
    (
        "sweep.code.implement",
        "sweep_code",
        "Implement the following in Python. Include docstrings and [[unit tests|doctests]].\n\n{q}",
    ),
    (
        "sweep.code.complete",
        "sweep_code",
        "Complete the code below and explain how it works.\n\n```python\n{q}\n```",
    ),
    (
        "sweep.code.reasoned",
        "sweep_code",
        "Write a correct, efficient solution. Explain the algorithm and its complexity "
        "first.\n\n{q}",
    ),
    (
        "sweep.code.predict",
        "sweep_code",
        "Predict the output of this code and explain why, tracing the execution.\n\n{q}",
    ),
    ("sweep.reason.answer", "sweep_reasoning", "Answer the following question.\n\n{q}"),
    (
        "sweep.reason.option",
        "sweep_reasoning",
        "[[Determine|Identify|Pick]] the correct answer and justify it.\n\n{q}",
    ),
    ("sweep.reason.logic", "sweep_reasoning", "Logic puzzle:\n{q}\n\nWhat follows, and why?"),
    (
        "sweep.doc.summary",
        "sweep_longdoc",
        "Summarize the document below section by section.\n\n{doc}",
    ),
    (
        "sweep.doc.claims",
        "sweep_longdoc",
        "Extract every key claim from this text with a supporting quote for each.\n\n{doc}",
    ),
    (
        "sweep.doc.critique",
        "sweep_longdoc",
        "Write a critical analysis of the following [[document|text]]: strengths, weaknesses, "
        "open questions.\n\n{doc}",
    ),
    (
        "sweep.doc.questions",
        "sweep_longdoc",
        "{doc}\n\nWrite ten exam questions about the text above, each with a model answer.",
    ),
    (
        "sweep.agent.json",
        "sweep_agentic",
        "{q}\n\nRespond with the tool calls you would make, as JSON, then the final answer.",
    ),
    (
        "sweep.agent.react",
        "sweep_agentic",
        "{q}\n\nUse the format Thought / Action / Action Input / Observation, repeating as "
        "needed, then Final Answer.",
    ),
    (
        "sweep.agent.plan",
        "sweep_agentic",
        "{q}\n\nFirst write a numbered plan of tool calls, then execute it.",
    ),
    # ---- long-context questions ({doc} is added by the simulator before or after)
    (
        "longctx.line",
        "longctx_question",
        "Tell me what is the <REGISTER_CONTENT> in line {key}? I need the number.",
    ),
    (
        "longctx.line_alt",
        "longctx_question",
        "What number is stored for line {key}? Reply with the number only.",
    ),
    (
        "longctx.topic_nth",
        "longctx_question",
        "What is the {ordinal} topic we discussed? Only give me the topic name.",
    ),
    ("longctx.topic_after", "longctx_question", "Which topic did we discuss right after {topic}?"),
    (
        "longctx.after",
        "longctx_question",
        'According to the document, what comes right after "{snippet}"?',
    ),
    (
        "longctx.quote",
        "longctx_question",
        'Quote the sentence that contains "{snippet}" and explain its role in the document.',
    ),
    (
        "longctx.where",
        "longctx_question",
        'Where in the text (beginning, middle or end) does "{snippet}" appear? Give the '
        "surrounding context.",
    ),
    (
        "longctx.paragraph",
        "longctx_question",
        'Find the passage mentioning "{snippet}" and summarize the paragraph it belongs to.',
    ),
    (
        "longctx.numbers",
        "longctx_question",
        'List every number in the paragraph containing "{snippet}".',
    ),
    ("longctx.only_doc", "longctx_question", "Answer using only the document: {question}"),
    # ---- students (some say "step by step": hard negatives)
    ("student.bare", "student", "{q}"),
    ("student.help", "student", "can someone help me with this? {q}"),
    ("student.how", "student", "how do i [[solve|do]] this: {q}"),
    ("student.sbs", "student", "{q} can you explain step by step?"),
    ("student.sbs_pls", "student", "{q}\n\nexplain step by step pls"),
    ("student.answer_key", "student", "i got {a} but the answer key says {b}... {q}"),
    ("student.teacher", "student", "my teacher gave us this and i'm stuck: {q}"),
    ("student.whats", "student", "{q} what's the answer?"),
    ("student.homework", "student", "help with homework question: {q}"),
    ("student.check", "student", "Can you check my work? {q} I think the answer is {a}."),
    (
        "student.working",
        "student",
        "{q}\nshow your working please, I need to understand it for the test",
    ),
    ("student.start", "student", "not sure how to even start this one: {q}"),
    ("student.worksheet", "student", "{q} (this is from my {course} worksheet)"),
    ("student.quick", "student", "quick q - {q}"),
    ("student.exam", "student", "Hi! I'm studying for my {course} exam. {q}"),
    ("student.hint", "student", "{q}\n\ndon't give me the answer, just a hint"),
    ("student.sf.why", "student_followup", "why did you [[multiply|divide|add|subtract]] there?"),
    (
        "student.sf.again",
        "student_followup",
        "can you explain the [[second|last|first]] step again?",
    ),
    ("student.sf.lost", "student_followup", "i still don't get it"),
    ("student.sf.next", "student_followup", "ok thanks! what about this one: {q}"),
    ("student.sf.easier", "student_followup", "is there an easier way to do it?"),
    ("student.sf.how_get", "student_followup", "wait how did you get {a}?"),
    ("student.sf.sure", "student_followup", "are you sure? my book says {b}"),
    (
        "student.sf.thanks",
        "student_followup",
        "[[thanks!!|thank you|ohh ok that makes sense, thanks]]",
    ),
    # ---- casual follow-ups
    (
        "casual.f.shorter",
        "casual_followup",
        "[[can you make it shorter?|shorter please|too long, cut it in half]]",
    ),
    (
        "casual.f.tone",
        "casual_followup",
        "make it more [[formal|casual|funny|friendly|professional]]",
    ),
    ("casual.f.more", "casual_followup", "give me [[3|5|a few]] more examples"),
    ("casual.f.simpler", "casual_followup", "can you explain that more simply?"),
    (
        "casual.f.translate",
        "casual_followup",
        "translate it into [[Spanish|French|German|Japanese|Portuguese]]",
    ),
    (
        "casual.f.not_meant",
        "casual_followup",
        "that's not quite what I meant[[, try again|. can you try again?|, I wanted "
        "something shorter]]",
    ),
    (
        "casual.f.audience",
        "casual_followup",
        "perfect, now write a version for [[kids|my boss|my grandma|twitter]]",
    ),
    ("casual.f.continue", "casual_followup", "[[continue|go on|keep going]]"),
    ("casual.f.expand", "casual_followup", "expand on point [[2|3|1]]"),
    ("casual.f.table", "casual_followup", "can you put that in a table?"),
    ("casual.f.why", "casual_followup", "[[why?|why is that?|really? why]]"),
    ("casual.f.sure", "casual_followup", "are you sure about that?"),
    ("casual.f.thanks", "casual_followup", "[[thanks!|thank you so much|great, thanks|ok cool]]"),
    ("casual.f.another", "casual_followup", "another one please"),
    # ---- developers
    ("dev.q.howto", "dev_question", "how do i {task} in [[python|Python]]?"),
    ("dev.q.best", "dev_question", "What's the [[best|cleanest|fastest]] way to {task} in Python?"),
    ("dev.q.write", "dev_question", "write a python function to {task}"),
    ("dev.q.review", "dev_question", "can you review this? feels clunky\n\n```python\n{code}\n```"),
    ("dev.q.explain", "dev_question", "what does this function do?\n\n{code}"),
    ("dev.q.tests", "dev_question", "write pytest tests for this:\n\n```\n{code}\n```"),
    ("dev.f.error", "dev_followup", "that didn't work, now I get:\n{error}"),
    ("dev.f.types", "dev_followup", "can you add type hints?"),
    ("dev.f.test", "dev_followup", "how would I write a unit test for this?"),
    ("dev.f.faster", "dev_followup", "can you make it faster? the input can be ~1M items"),
    ("dev.f.line", "dev_followup", "what does the {name} line do?"),
    ("dev.f.convert", "dev_followup", "convert this to [[TypeScript|Go|Rust|Java]]"),
    ("dev.f.fixed", "dev_followup", "[[thanks, that fixed it|works now, thanks|perfect 👍]]"),
    ("dev.f.idiomatic", "dev_followup", "is there a more idiomatic way?"),
    # ---- writers
    ("writer.proofread", "writer", "Can you proofread this?\n\n{doc}"),
    ("writer.summary", "writer", "Please summarize the key points of the following:\n\n{doc}"),
    (
        "writer.formal",
        "writer",
        "Rewrite this in a more [[formal|concise|engaging]] tone:\n\n{doc}",
    ),
    (
        "writer.feedback",
        "writer",
        "Give me feedback on the structure and flow of this draft:\n\n{doc}",
    ),
    ("writer.weakest", "writer", "{doc}\n\nWhat are the weakest arguments in the text above?"),
    ("writer.tighten", "writer", "Tighten this up, cut about [[20|30|40]]%:\n\n{doc}"),
    ("writer.exec", "writer", "Turn this into an executive summary:\n\n{doc}"),
    ("writer.f.shorter", "writer_followup", "make it shorter"),
    (
        "writer.f.linkedin",
        "writer_followup",
        "now a version for [[LinkedIn|our newsletter|a blog post]]",
    ),
    (
        "writer.f.voice",
        "writer_followup",
        "can you keep my voice though? it sounds too generic now",
    ),
    (
        "writer.f.conclusion",
        "writer_followup",
        "add a [[conclusion|stronger opening|call to action]]",
    ),
    ("writer.f.para", "writer_followup", "rewrite just the [[second|third|last]] paragraph"),
    # ---- batch pipelines: one fixed template over many documents
    (
        "batch.ticket",
        "batch",
        "Summarize the following support ticket in 3 bullet points:\n\n{doc}",
    ),
    (
        "batch.classify",
        "batch",
        "Classify the following customer message into one of [billing, technical, account, "
        "feedback, other]. Reply with the label only.\n\nMessage: {doc}",
    ),
    (
        "batch.invoice",
        "batch",
        "Extract the invoice fields as JSON with keys vendor, invoice_number, date, total, "
        "currency:\n\n{doc}",
    ),
    (
        "batch.translate",
        "batch",
        "Translate the following text to [[German|French|Spanish|Japanese]]. Output only the "
        "translation.\n\n{doc}",
    ),
    (
        "batch.moderate",
        "batch",
        "You are a content moderator. Does the following user post violate the policy? Answer "
        "YES or NO and a one-sentence reason.\n\nPost: {doc}",
    ),
    (
        "batch.index",
        "batch",
        "Write a one-sentence summary of this document for a search index:\n\n{doc}",
    ),
    (
        "batch.keywords",
        "batch",
        "Generate 5 keywords for the following article, comma-separated:\n\n{doc}",
    ),
    (
        "batch.code_review",
        "batch",
        "Review the following code for bugs and style issues. Respond in JSON with keys "
        '"issues" and "severity".\n\n```\n{doc}\n```',
    ),
    ("batch.docstring", "batch", "Write a concise docstring for this function:\n\n{doc}"),
    ("batch.tldr", "batch", "{doc}\n\n---\nTL;DR in one line:"),
    (
        "batch.entities",
        "batch",
        "Extract all person names, organizations and dates from the text below as JSON.\n\n"
        "Text: {doc}",
    ),
    (
        "batch.sentiment",
        "batch",
        "Rate the sentiment of this message from 1 (very negative) to 5 (very positive). Reply "
        "with the number only.\n\nMessage: {doc}",
    ),
    # ---- evaluation harness formats: plain, no reasoning request
    ("eval.raw", "eval_plain", "{q}"),
    ("eval.qa", "eval_plain", "Q: {q}\nA:"),
    ("eval.answer", "eval_plain", "Answer the following question.\n\n{q}"),
    ("eval.complete", "eval_plain", "Complete the following Python code.\n\n{q}"),
    ("eval.answer_suffix", "eval_plain", "{q}\nAnswer:"),
    ("eval.problem", "eval_plain", "Problem: {q}\nSolution:"),
    # ---- viral questions, each in many people's own words
    (
        "viral.strawberry",
        "viral",
        "[[How many r's are in strawberry?|how many times does the letter R appear in the word "
        '"strawberry"|Count the r\'s in strawberry|how many Rs in strawberry lol|Quick test: '
        "how many letter r are in the word strawberry?]]",
    ),
    (
        "viral.decimal",
        "viral",
        "[[Which is bigger, 9.11 or 9.9?|is 9.11 larger than 9.9?|9.9 vs 9.11 which number is "
        "greater|Which number is larger: 9.11 or 9.9? Answer quickly.]]",
    ),
    (
        "viral.hotdog",
        "viral",
        "[[Is a hot dog a sandwich?|settle this for us: is a hotdog a sandwich|Is a hot dog "
        "technically a sandwich? My friends and I are arguing.]]",
    ),
    (
        "viral.moon",
        "viral",
        "[[What would happen if the moon disappeared?|if the moon vanished tomorrow what would "
        "happen to earth|What happens to Earth if the Moon suddenly disappears?]]",
    ),
    (
        "viral.name",
        "viral",
        "[[If you could pick your own name, what would it be?|what name would you choose for "
        "yourself?|Pick a name for yourself and explain why]]",
    ),
    (
        "viral.monty",
        "viral",
        "[[Explain the Monty Hall problem like I'm five|monty hall problem eli5|Why should you "
        "switch doors in the Monty Hall problem?]]",
    ),
    (
        "viral.roast",
        "viral",
        "[[Roast me based on my job: I'm a {job}|roast me, I work as a {job}|Give me a gentle "
        "roast. I'm a {job}.]]",
    ),
    (
        "viral.unicorn",
        "viral",
        "[[Draw a unicorn in ASCII art|ascii art unicorn please|Can you make an ASCII drawing of "
        "a unicorn?]]",
    ),
    # ---- system prompts
    ("sys.o.helpful", "system_organic", "You are a helpful assistant."),
    (
        "sys.o.coder",
        "system_organic",
        "You are a senior software engineer. Be concise and show code.",
    ),
    ("sys.o.tutor", "system_organic", "You are a friendly tutor for high-school students."),
    (
        "sys.o.editor",
        "system_organic",
        "You are an experienced editor. Preserve the author's voice.",
    ),
    (
        "sys.o.batch",
        "system_organic",
        "You are a data-processing assistant. Follow the requested output format exactly.",
    ),
    (
        "sys.h.expert",
        "system_harvest",
        "You are a world-class expert problem solver. Always reason [[carefully|step by step]] "
        "and explain every step before the final answer.",
    ),
    (
        "sys.h.teacher",
        "system_harvest",
        "You are a patient teacher. Give complete, detailed explanations with all intermediate "
        "work.",
    ),
    (
        "sys.h.format",
        "system_harvest",
        "Always answer with <reasoning> and <answer> sections. Never skip the reasoning.",
    ),
    ("sys.h.plain", "system_harvest", "You are a helpful assistant."),
]

PHRASINGS: tuple[Phrasing, ...] = tuple(Phrasing(k, f, t) for k, f, t in _P)
_BY_FAMILY: dict[str, tuple[Phrasing, ...]] = {}
for _ph in PHRASINGS:
    _BY_FAMILY[_ph.family] = (*_BY_FAMILY.get(_ph.family, ()), _ph)
_BY_KEY: dict[str, Phrasing] = {ph.key: ph for ph in PHRASINGS}
if len(_BY_KEY) != len(PHRASINGS):
    raise RuntimeError("duplicate phrasing keys")

#: The kind of document each batch template expects.
BATCH_DOC_KIND: dict[str, Literal["message", "document", "code", "invoice"]] = {
    "batch.ticket": "message",
    "batch.classify": "message",
    "batch.invoice": "invoice",
    "batch.translate": "message",
    "batch.moderate": "message",
    "batch.index": "document",
    "batch.keywords": "document",
    "batch.code_review": "code",
    "batch.docstring": "code",
    "batch.tldr": "document",
    "batch.entities": "document",
    "batch.sentiment": "message",
}


def by_family(*families: PhrasingFamily) -> tuple[Phrasing, ...]:
    """All phrasings of the given families, in declaration order."""
    return tuple(ph for fam in families for ph in _BY_FAMILY.get(fam, ()))


def get(key: str) -> Phrasing:
    """One phrasing by key; the error lists the known keys' prefixes."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown phrasing {key!r}") from None


def elicitation_phrasings() -> tuple[Phrasing, ...]:
    """Every reasoning-elicitation phrasing (CoT requests and answer-format demands)."""
    return by_family(*ELICITATION_FAMILIES)


def choose(rng: np.random.Generator, options: Sequence[Phrasing]) -> Phrasing:
    """One phrasing, uniformly."""
    return options[int(rng.integers(len(options)))]


@dataclass(frozen=True)
class Wrapper:
    """An operator's wrapping habit: a few phrasings, where they go, how sloppy the typing is.

    With ``frozen=True`` every alternation is realized once (by :meth:`freeze`), so the
    wrapper is one literal string per phrasing, as a script would send it.
    """

    phrasings: tuple[Phrasing, ...]
    placement: Placement = "either"
    noise: float = 0.0

    @classmethod
    def pick(
        cls,
        rng: np.random.Generator,
        families: Sequence[PhrasingFamily] = ELICITATION_FAMILIES,
        k: int = 3,
        *,
        noise: float = 0.0,
        exclude_step_by_step: bool = False,
    ) -> Wrapper:
        """``k`` distinct phrasings drawn from ``families``; a random fixed or free placement."""
        pool = [
            ph for ph in by_family(*families) if not (exclude_step_by_step and ph.says_step_by_step)
        ]
        if not pool:
            raise ValueError(f"no phrasings in families {tuple(families)}")
        idx = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
        placement: Placement = ("prefix", "suffix", "either")[int(rng.integers(3))]
        return cls(tuple(pool[int(i)] for i in idx), placement, noise)

    def freeze(self, rng: np.random.Generator) -> Wrapper:
        """The same wrapper with every alternation realized once."""
        fixed = tuple(
            Phrasing(ph.key, ph.family, realize(ph.template, rng)) for ph in self.phrasings
        )
        placement = self.placement
        if placement == "either":
            placement = "prefix" if rng.random() < 0.5 else "suffix"
        return Wrapper(fixed, placement, self.noise)

    def apply(self, payload: str, rng: np.random.Generator, **slots: str) -> str:
        """Wrap ``payload`` with one of the phrasings (fresh alternations unless frozen)."""
        ph = choose(rng, self.phrasings)
        text = perturb(realize(ph.template, rng), rng, self.noise)
        if ph.has_payload_slot:
            return fill(text, q=payload, doc=payload, **slots)
        return wrap(fill(text, **slots), payload, rng, self.placement)


# --------------------------------------------------------------------------- composed payloads

_ERRORS: tuple[str, ...] = (
    "TypeError: unsupported operand type(s) for +: 'int' and 'str'",
    "IndexError: list index out of range",
    "KeyError: '{name}'",
    "AttributeError: 'NoneType' object has no attribute 'append'",
    "ValueError: invalid literal for int() with base 10: ''",
    "RecursionError: maximum recursion depth exceeded in comparison",
    "ZeroDivisionError: division by zero",
    "NameError: name '{name}' is not defined",
    "TypeError: '{name}' object is not iterable",
    "UnboundLocalError: cannot access local variable '{name}' where it is not associated with "
    "a value",
)
_FILES: tuple[str, ...] = ("main.py", "solution.py", "app.py", "utils.py", "test.py", "script.py")


def compose_error(code: str, rng: np.random.Generator) -> str:
    """A Python traceback that points into ``code`` (names taken from the code)."""
    fn_match = re.search(r"def (\w+)\(", code)
    fn = fn_match.group(1) if fn_match else "main"
    names = re.findall(r"\b([a-z_][a-z0-9_]{2,})\b", code) or ["result"]
    name = names[int(rng.integers(len(names)))]
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.strip().startswith(("#", '"'))]
    line = lines[int(rng.integers(len(lines)))].strip() if lines else "return result"
    fname = _FILES[int(rng.integers(len(_FILES)))]
    err = fill(_ERRORS[int(rng.integers(len(_ERRORS)))], name=name)
    return (
        "Traceback (most recent call last):\n"
        f'  File "{fname}", line {int(rng.integers(20, 90))}, in <module>\n'
        f"    print({fn}(data))\n"
        f'  File "{fname}", line {int(rng.integers(2, 19))}, in {fn}\n'
        f"    {line}\n"
        f"{err}"
    )


def compose_error_report(code: str, rng: np.random.Generator) -> str:
    """A developer pasting code plus the traceback it produced, in their own words."""
    intro = realize(
        "[[I'm getting this error|getting an error|why does this crash?|help, this throws]]"
        "[[ when I run it| on the second test case| and I don't get why|]][[:|.|]]",
        rng,
    )
    return f"{intro}\n\n```python\n{code.strip()}\n```\n\n{compose_error(code, rng)}"


_VENDORS = (
    "Northwind Traders",
    "Acme Industrial Supply",
    "Blue Fjord Logistics",
    "Kestrel Office GmbH",
    "Sunrise Catering Ltd",
    "Pinecrest Software Inc.",
    "Oakridge Print & Copy",
    "Maple Leaf Electrical",
)
_ITEMS = (
    "Consulting hours",
    "A4 paper, 80gsm (box)",
    "Freight, pallet",
    "Annual software license",
    "Toner cartridge",
    "Catering, per person",
    "Cable, Cat6, 305 m",
    "Maintenance visit",
)


def compose_invoice(rng: np.random.Generator) -> str:
    """A plain-text invoice with a vendor, number, date, line items and total."""
    vendor = _VENDORS[int(rng.integers(len(_VENDORS)))]
    currency = ("USD", "EUR", "GBP", "CAD")[int(rng.integers(4))]
    lines, total = [], 0.0
    for _ in range(int(rng.integers(1, 6))):
        item = _ITEMS[int(rng.integers(len(_ITEMS)))]
        qty = int(rng.integers(1, 40))
        price = round(float(rng.uniform(2, 400)), 2)
        total += qty * price
        lines.append(f"{item:<28} {qty:>4} x {price:>9.2f}")
    date = f"2026-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    number = f"INV-{int(rng.integers(10_000, 99_999))}"
    terms = int(rng.integers(1, 5)) * 15
    return (
        f"{vendor}\nInvoice {number}\nDate: {date}\nBill to: Accounts Payable\n\n"
        + "\n".join(lines)
        + f"\n\nTotal due: {total:,.2f} {currency}\nPayment terms: net {terms} days"
    )


_TOOLS: tuple[str, ...] = (
    "search(query: str) -> list of results",
    "calculator(expression: str) -> number",
    "get_weather(city: str, date: str) -> forecast",
    "book_flight(origin: str, destination: str, date: str) -> confirmation",
    "send_email(to: str, subject: str, body: str) -> status",
    "read_file(path: str) -> str",
    "run_python(code: str) -> stdout",
    "sql_query(query: str) -> rows",
    "calendar_create(title: str, start: str, end: str) -> event_id",
    "http_get(url: str) -> body",
)
_AGENT_TASKS: tuple[str, ...] = (
    "Find the cheapest flight from {city} to {city2} next {day} and email the options to "
    "my manager.",
    "What will the weather be in {city} on {day}, and should I reschedule my outdoor meeting?",
    "Read data/sales.csv, compute the month-over-month growth and summarize the trend.",
    "Look up the population of {city} and {city2} and tell me the ratio.",
    "Schedule a 30-minute sync with the team every {day} at 10am and send an invite.",
    "Query the orders table for customers with more than 5 orders last month and draft a "
    "thank-you email to each.",
    "Fetch https://example.com/status, check whether all services are up, and report any outages.",
    "Write and run a script that finds all prime numbers below 10,000 and report how many "
    "there are.",
)
_CITIES = ("Berlin", "Lagos", "Osaka", "Toronto", "Lima", "Mumbai", "Melbourne", "Oslo", "Austin")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def compose_agentic_task(rng: np.random.Generator) -> str:
    """A tool-use task with a short tool list, as an agent framework would send it."""
    k = int(rng.integers(2, 5))
    tools = [_TOOLS[int(i)] for i in rng.choice(len(_TOOLS), size=k, replace=False)]
    cities = rng.choice(len(_CITIES), size=2, replace=False)
    task = fill(
        _AGENT_TASKS[int(rng.integers(len(_AGENT_TASKS)))],
        city=_CITIES[int(cities[0])],
        city2=_CITIES[int(cities[1])],
        day=_DAYS[int(rng.integers(len(_DAYS)))],
    )
    header = realize("[[You have access to the following tools|Available tools|Tools]]:", rng)
    return header + "\n" + "\n".join(f"- {t}" for t in tools) + f"\n\nTask: {task}"


__all__ = [
    "BATCH_DOC_KIND",
    "ELICITATION_FAMILIES",
    "PHRASINGS",
    "Phrasing",
    "PhrasingFamily",
    "Placement",
    "Wrapper",
    "by_family",
    "choose",
    "compose_agentic_task",
    "compose_error",
    "compose_error_report",
    "compose_invoice",
    "elicitation_phrasings",
    "fill",
    "get",
    "perturb",
    "realize",
    "wrap",
]
