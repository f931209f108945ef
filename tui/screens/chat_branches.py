"""Editing the transcript and branching it, a part of ChatScreen (tui/screens/chat.py).

Regenerate (ctrl+r), edit and resend (ctrl+l) and continuing from a token picked in inspect mode
each take messages out of the transcript and answer again; the store keeps the old ones as a
branch. A vote (v on an answer) says this branch beats its siblings. Switching between branches
(ctrl+← ctrl+→) stays in chat.py: Textual finds @on handlers only on the screen class itself.
"""

from __future__ import annotations

from typing import Any

from tiankong.engine.model_names import display_name, stored_model
from tiankong.engine.remote import RemoteEngine
from tiankong.tui.screens.branch import CandidatePicker, branch_votes
from tiankong.tui.screens.chat_sending import ContextNotice, NotAnswered
from tiankong.tui.widgets.message import AssistantMessage, UserMessage
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.status import plural


class ChatBranches:
    """ChatScreen's transcript editing and branches (mixed into it; uses its state and widgets)."""

    # ------------------------------------------------------------------ editing the transcript

    async def _remove_from(self, message_id: int | None) -> None:
        """Take that message and everything after it out of the transcript (the store keeps them:
        they stay a branch, reachable with ctrl+← ctrl+→)."""
        msgs = self.messages
        index = next((i for i, w in enumerate(msgs) if w.message_id == message_id), None)
        if index is None:
            return
        for w in msgs[index:]:
            if w is self.inspected:
                self.inspected = None
            await w.remove()
        # The lines after the last message kept were about the messages taken out: context notices,
        # and a "not answered" warning under the message taken out.
        children = list(self.transcript.children)
        kept = msgs[index - 1] if index else None
        after = children.index(kept) + 1 if kept is not None else 0
        notes = [w for w in children[after:] if isinstance(w, (ContextNotice, NotAnswered))]
        await self.transcript.remove_children(notes)
        self.dropped_turns = self._dropped_through(kept)

    async def action_regenerate(self) -> None:
        if not self._can_generate():
            return
        msgs = self.messages
        if not msgs:
            self.notify("nothing to regenerate yet: send a message first")
            return
        last = msgs[-1]
        if isinstance(last, AssistantMessage):  # the stored answer stays, as a branch
            if last.message_id is None:
                await last.remove()
            else:
                await self._remove_from(last.message_id)
        if not any(isinstance(w, UserMessage) for w in self.messages):
            return
        await self._answer()

    def action_edit_last(self) -> None:
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
            return
        user = next((w for w in reversed(self.messages) if isinstance(w, UserMessage)), None)
        if user is None or user.message_id is None:
            self.notify("no message of yours to edit yet")
            return
        prompt = self.query_one("#prompt", PromptInput)
        if self.editing_id is None:  # a draft typed before ctrl+l comes back when the edit ends
            self._draft = prompt.text
        prompt.text = user.content
        prompt.border_title = "editing your last message · enter resends · esc cancels"
        prompt.add_class("-editing")
        prompt.focus()
        self.editing_id = user.message_id

    def _end_edit(self, restore: bool = True) -> None:
        """Leave editing. With `restore` (esc, a new or another chat) the box gets back the draft it held
        before ctrl+l; a resent edit (restore=False) keeps it in self._draft until the edit is stored."""
        if self.editing_id is None:
            return
        self.editing_id = None
        prompt = self.query_one("#prompt", PromptInput)
        prompt.border_title = None
        prompt.remove_class("-editing")
        if restore:
            prompt.text, self._draft = self._draft, ""

    # ------------------------------------------------------------------ branches

    def on_assistant_message_branch_requested(self, event: AssistantMessage.BranchRequested) -> None:
        answer, index = event.answer, event.index
        if not self._can_generate():
            return
        if answer.message_id is None:
            self.notify("this answer was not stored: regenerate it first")
            return
        if isinstance(self.engine, RemoteEngine):
            self.notify("continuing from a chosen token needs a local model: a server takes messages, not tokens")
            return
        foreign = self._written_by_another(answer)
        if foreign is not None:
            self.notify(foreign, severity="warning", markup=False)
            return
        full = self._no_room_to_branch(answer, index)
        if full is not None:
            self.notify(full, severity="warning", markup=False)
            return

        async def picked(candidate: dict[str, Any] | None) -> None:
            if candidate is not None and answer.is_attached and self._can_generate():
                at = answer.tokens[index]
                before = [dict(t) for t in answer.tokens[:index]]
                await self._remove_from(answer.message_id)  # it stays, as a sibling of the new branch
                await self._answer((before, (candidate, at)))

        self.app.push_screen(CandidatePicker(answer.tokens[index], index), picked)

    def _written_by_another(self, answer: AssistantMessage) -> str | None:
        """Why `b` cannot continue `answer`, or None: another model wrote it (a chat opened in another
        model's playground), so its token ids are that model's; read with this one's vocabulary they
        are other tokens, and the branch would mix the two."""
        if answer.model is None or stored_model(answer.model) == stored_model(self.model_id):
            return None
        return (
            f"this answer was written by {display_name(answer.model)}, whose tokens are not {self.model_name}'s: "
            f"to branch from it, open the chat with that model (tiankong chat -m {answer.model})"
        )

    def on_assistant_message_branch_vote(self, event: AssistantMessage.BranchVote) -> None:
        """A vote that this branch beats each sibling answer, at the token where the two part."""
        answer = event.answer
        others = [i for i in answer.branches if i != answer.message_id]
        if answer.message_id is None or not others:
            self.notify("no other branch to compare with here: ctrl+r or b in f5 make one")
            return
        index = self.messages.index(answer)
        conversation = self.conversation()
        conversation = conversation[: len(conversation) - (len(self.messages) - index)]  # up to the user's message
        chosen = self._save(self.store.get_message, answer.message_id)
        rejected = [m for m in (self._save(self.store.get_message, i) for i in others) if m is not None]
        if chosen is None or not rejected:
            return
        votes = branch_votes(conversation, chosen, rejected, self.model_id, getattr(self.app, "rater", ""))
        if not votes:
            self.notify("the other branches here say just what this one says: there is nothing to prefer")
            return
        replaced = self._save(self.store.add_branch_votes, votes)
        if replaced is not None:
            again = f", replacing {plural(replaced, 'earlier vote')} on the same answers" if replaced else ""
            self.notify(
                f"stored {plural(len(votes), 'vote')}{again}: this branch is better (ctrl+g lists votes)",
                title="voted",
                markup=False,
            )
