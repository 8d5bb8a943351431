"""The benchmark's workload, built from the real captures in ../shared/fixtures (read in place).

Papers: every Hugging Face API response and the daily HTML page, parsed by the production
parsers (182 distinct papers), replicated under new arXiv-style ids to ``papers`` (2,000),
spread over the 7 daily lists of a default window, with upvotes varied so rankings differ.
Topics: 50 an operator might define (45 by keywords, 5 by organization). Subscribers: 1 to 4
topics each; 40% add 1 to 3 personal keywords, 10% a personal exclude; some names (a few
non-ASCII), some with sections, a minimum of upvotes or a shorter digest. Deterministic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from newsletter.models import PaperData, Subscriber, Topic

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
DAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC)
WINDOW_DAYS = 7

TOPIC_KEYWORDS: dict[str, tuple[str, ...]] = {
    "diffusion": ("diffusion", "denoising", "score-based"),
    "llm": ("large language models", "LLM", "LLMs"),
    "reasoning": ("reasoning", "chain-of-thought", "math"),
    "rl": ("reinforcement learning", "policy optimization", "reward"),
    "rlhf": ("RLHF", "preference optimization", "DPO", "reward model"),
    "agents": ("agent", "agents", "agentic", "tool use"),
    "multimodal": ("multimodal", "vision-language", "MLLM", "MLLMs"),
    "video": ("video", "videos", "temporal"),
    "video-generation": ("video generation", "text-to-video", "video diffusion"),
    "image-generation": ("text-to-image", "image generation", "image editing"),
    "3d": ("3D", "Gaussian splatting", "NeRF", "point cloud"),
    "robotics": ("robot", "robotic", "manipulation", "embodied"),
    "speech": ("speech", "audio", "TTS", "ASR"),
    "code": ("code generation", "coding", "software engineering", "program"),
    "retrieval": ("retrieval", "RAG", "retrieval-augmented"),
    "search": ("search", "web search", "deep research"),
    "efficiency": ("efficient", "efficiency", "speedup", "latency"),
    "quantization": ("quantization", "low-bit", "FP8", "INT4"),
    "moe": ("mixture-of-experts", "MoE", "experts"),
    "attention": ("attention", "sparse attention", "linear attention"),
    "long-context": ("long-context", "long context", "context length"),
    "distillation": ("distillation", "knowledge distillation", "teacher"),
    "fine-tuning": ("fine-tuning", "supervised fine-tuning", "LoRA", "SFT"),
    "pretraining": ("pretraining", "pre-training", "scaling law", "scaling laws"),
    "data": ("dataset", "data curation", "synthetic data"),
    "benchmark": ("benchmark", "evaluation", "leaderboard"),
    "safety": ("safety", "jailbreak", "alignment", "harmful"),
    "interpretability": ("interpretability", "mechanistic", "activation steering", "probing"),
    "hallucination": ("hallucination", "hallucinations", "factuality"),
    "translation": ("translation", "multilingual", "low-resource"),
    "medical": ("medical", "clinical", "biomedical", "healthcare"),
    "science": ("scientific", "chemistry", "biology", "physics"),
    "math": ("theorem proving", "mathematical", "olympiad"),
    "gui": ("GUI", "web agent", "computer use"),
    "world-models": ("world model", "world models", "simulation"),
    "flow-matching": ("flow matching", "rectified flow"),
    "autoregressive": ("autoregressive", "next-token prediction", "tokenizer"),
    "transformers": ("transformer", "transformers", "architecture"),
    "optimization": ("optimizer", "gradient", "training stability"),
    "representation": ("representation learning", "embedding", "embeddings", "contrastive"),
    "segmentation": ("segmentation", "detection", "object detection"),
    "ocr-documents": ("OCR", "document", "documents", "chart"),
    "memory": ("memory", "continual learning", "forgetting"),
    "self-improvement": ("self-improvement", "self-evolving", "self-play"),
    "test-time": ("test-time", "test-time scaling", "inference-time"),
}
TOPIC_ORGANIZATIONS: dict[str, tuple[str, ...]] = {
    "big-tech": ("Google", "Meta", "Microsoft", "Apple", "NVIDIA"),
    "china-labs": ("Alibaba", "Tencent", "ByteDance", "DeepSeek", "Qwen"),
    "universities-us": ("Stanford", "MIT", "Berkeley", "Carnegie Mellon"),
    "universities-asia": ("Tsinghua", "Peking", "Zhejiang", "HKUST", "Hong Kong"),
    "open-labs": ("Hugging Face", "AI2", "OpenGVLab", "EleutherAI"),
}
PERSONAL_KEYWORDS = (
    "GRPO",
    "PPO",
    "DPO",
    "KV cache",
    "speculative decoding",
    "vision transformer",
    "ViT",
    "CLIP",
    "Llama",
    "Qwen",
    "GPT-4",
    "DeepSeek",
    "tokenization",
    "curriculum",
    "uncertainty",
    "calibration",
    "robustness",
    "adversarial",
    "privacy",
    "federated",
    "graph",
    "time series",
    "recommendation",
    "protein",
    "molecule",
    "weather",
    "driving",
    "navigation",
    "humanoid",
    "dexterous",
    "avatar",
    "face",
    "music",
    "dialogue",
    "summarization",
    "question answering",
    "visual question answering",
    "captioning",
    "grounding",
    "spatial",
    "counterfactual",
    "causal",
    "bias",
    "fairness",
    "watermark",
    "steering",
    "pruning",
    "sparsity",
    "state space",
    "Mamba",
)
NAMES = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Zoë", "Łukasz", "José", "Håkon", "Anaïs")


@dataclass(frozen=True, slots=True)
class Workload:
    papers: list[PaperData]
    topics: dict[str, Topic]
    subscribers: int
    seed: int

    def subscriber_models(self) -> Iterator[Subscriber]:
        """Generated on the fly: 100,000 Subscriber objects need not all be in memory."""
        yield from subscribers(self.subscribers, list(self.topics), self.seed)


def fixture_papers() -> list[PaperData]:
    """Every distinct paper of the real captures, through the production parsers."""
    # Imported here: the build's pool workers import this module (spawn re-imports the
    # benchmark's main module in each), and the parsers' HTTP and HTML libraries would add
    # ~150 ms of CPU to each worker's start that no production worker pays.
    from newsletter.sources import huggingface

    by_id: dict[str, PaperData] = {}
    for path in sorted(FIXTURES.glob("hf_api_daily_papers_*.json")):
        for paper in huggingface.parse(path.read_bytes(), str(path)):
            by_id[paper.id] = paper
    page = FIXTURES / "hf_html_daily_2024-08-01_13papers.html"
    for paper in huggingface.parse_page(page.read_bytes(), str(page)):
        by_id.setdefault(paper.id, paper)
    return [by_id[k] for k in sorted(by_id)]


def papers(count: int, seed: int = 8) -> list[PaperData]:
    rng = random.Random(seed)
    base = fixture_papers()
    out = []
    for i in range(count):
        paper = base[i % len(base)]
        day = DAY - dt.timedelta(days=i % WINDOW_DAYS)
        upvotes = max(0, int(paper.upvotes * rng.uniform(0.3, 1.7)) + rng.randint(0, 5))
        out.append(
            dataclasses.replace(
                paper,
                id=f"{2611 - i // 100_000:04d}.{i % 100_000:05d}",
                day=day,
                upvotes=upvotes,
                submitted_at=dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC),
            )
        )
    return out


def topics() -> dict[str, Topic]:
    out = {name: Topic(name=name, keywords=kw) for name, kw in TOPIC_KEYWORDS.items()}
    for name, orgs in TOPIC_ORGANIZATIONS.items():
        out[name] = Topic(name=name, organizations=orgs)
    return out


def subscribers(count: int, topic_names: list[str], seed: int = 8) -> Iterator[Subscriber]:
    rng = random.Random(seed)
    for i in range(count):
        chosen = tuple(rng.sample(topic_names, rng.randint(1, 4)))
        keywords: tuple[str, ...] = ()
        if rng.random() < 0.4:
            keywords = tuple(rng.sample(PERSONAL_KEYWORDS, rng.randint(1, 3)))
        exclude: tuple[str, ...] = ()
        if rng.random() < 0.1:
            exclude = (rng.choice(PERSONAL_KEYWORDS),)
        yield Subscriber(
            email=f"reader{i}@example.org",
            topics=chosen,
            name=rng.choice(NAMES) if rng.random() < 0.3 else None,
            max_papers=10 if rng.random() < 0.8 else 5,
            min_upvotes=5 if rng.random() < 0.2 else 0,
            keywords=keywords,
            exclude=exclude,
            sections=rng.random() < 0.1,
            id=f"bench{i:07d}",  # what the store's row would give: the links carry it
        )


def make(subscriber_count: int, paper_count: int = 2_000, seed: int = 8) -> Workload:
    return Workload(papers(paper_count, seed), topics(), subscriber_count, seed)
