"""The decisions/action-items extractor on a scripted meeting and on real meeting phrasing."""

from __future__ import annotations

import pytest
from meeting_support import load_meeting

from captiond.exports.actions import Utterance, extract


def test_scripted_meeting_yields_expected_items():
    """Every action (owner, task, due phrase, time) and decision of the meeting, and no more."""
    found = extract(load_meeting())
    actions = [(f.owner, f.text, f.due, f.start_ms // 1000) for f in found if f.kind == "action"]
    assert actions == [
        ("Alice", "update the documentation", "by Friday", 24),
        ("Bob", "fix the flaky test", "before the code freeze", 42),
        ("Bob", "send the test report to the QA team", "tomorrow morning", 47),
        ("Dave", "get a quote for the larger tier", "by the end of the week", 79),
        (None, "cover the on-call", None, 91),
        ("Erin", "take the on-call rotation while Bob is away", None, 97),
        ("Erin", "renew the TLS certificate before it expires", "on March 3rd", 104),
        (None, "announce the release date to customers", "within two days", 123),
        ("Frank and Grace", "prepare the launch blog post", None, 129),
        ("Carol", "check with legal about the data retention policy and get back to you",
         "by Wednesday", 148),
    ]
    decisions = [(f.text, f.start_ms // 1000) for f in found if f.kind == "decision"]
    assert decisions == [
        ("We decided to go with the managed Postgres offering", 63),
        ("Let's keep the launch on Monday", 116),
    ]


@pytest.mark.parametrize(
    ("text", "owner", "task", "due"),
    [
        ("Okay so Priya's going to look into the memory leak.", "Priya",
         "look into the memory leak", None),
        ("Um, Sam and Lee will migrate the CI runners next Tuesday.", "Sam and Lee",
         "migrate the CI runners", "next Tuesday"),
        ("Jordan, please send out the agenda by EOD.", "Jordan", "send out the agenda", "by EOD"),
        ("Can you review my PR, Maria?", "Maria", "review my PR", None),
        ("To-do: Chen to update the roadmap slide by the next meeting.", "Chen",
         "update the roadmap slide", "by the next meeting"),
        ("We've got to renew the domain within the next two weeks.", None, "renew the domain",
         "within the next two weeks"),
        ("I will follow up with the vendor on Thursday afternoon.", "Speaker",
         "follow up with the vendor", "on Thursday afternoon"),
        ("Leave it with me, I'll sort out the invoices.", "Speaker", "sort out the invoices",
         None),
        ("Kim is responsible for the onboarding checklist.", "Kim",
         "the onboarding checklist", None),
        ("So the next step is for Maria to send the contract to legal.", "Maria",
         "send the contract to legal", None),
        ("Tom, you'll handle the deployment, right?", "Tom", "handle the deployment", None),
        ("I'll take the action to update the wiki by Monday.", "Speaker", "update the wiki",
         "by Monday"),
        ("Okay, uh, Priya, could you, um, double-check the numbers before Thursday's meeting?",
         "Priya", "double-check the numbers", "before Thursday's meeting"),
    ],
)
def test_action_phrasings(text: str, owner: str | None, task: str, due: str | None):
    """Common ways people assign or take work in meetings are recognised."""
    found = [f for f in extract([Utterance(0, text, "Speaker")]) if f.kind == "action"]
    assert [(f.owner, f.text, f.due) for f in found] == [(owner, task, due)]


@pytest.mark.parametrize(
    "text",
    [
        "I'll be honest, I have not read it.",
        "Bob will be out next week.",
        "I can see your screen now.",
        "Let me think about it.",
        "This will take at least two sprints.",
        "Alice won't make it to the review.",
        "Should we go with option B?",
        "Did we agree on the budget?",
        "We haven't decided on the vendor yet.",
        "If Dave will sign off, we can order the hardware.",
        "The build will break if we merge that.",
        "Users will need to log in again.",
        "Back to the agenda.",
        "I'm going to share my screen.",
        "Sure, I can do that.",
    ],
)
def test_not_actions_or_decisions(text: str):
    """Hedges, states, questions, negations and conditionals are not items."""
    assert extract([Utterance(0, text, "Speaker")]) == []


@pytest.mark.parametrize(
    "text",
    [
        "We agreed to freeze the API until June.",
        "Decision: the offsite moves to Lisbon.",
        "So we're going with the blue design.",
        "The budget was approved yesterday.",
        "Everyone agrees that the old dashboard goes away.",
    ],
)
def test_decision_phrasings(text: str):
    """Decisions are found however they are announced."""
    assert [f.kind for f in extract([Utterance(0, text)])] == ["decision"]


def test_self_assigned_without_speaker():
    """"I'll ..." with no speaker name is marked self-assigned rather than given an owner."""
    (f,) = extract([Utterance(5_000, "I'll draft the RFC tonight.", None, 3)])
    assert (f.owner, f.self_assigned, f.due, f.start_ms, f.line_index) == (
        None, True, "tonight", 5_000, 3)
