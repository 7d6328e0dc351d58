"""Natural-language instructions for the 50 Meta-World v3 tasks.

Meta-World names its tasks (``"pick-place-v3"``) but gives no instructions; language-conditioned
policies and the skill decomposition (paper Sec. 3.1, Appendix E) need one sentence per task.
Phrasing is deliberately regular so it parses into atomic skills: each clause starts with one
of the verbs ``pick up / place / put / open / close / push / pull / press / turn / reach /
slide / insert / lock / unlock / sweep / hammer / grasp / remove / move``, and multi-step tasks
join clauses with ``" and "`` (e.g. ``"pick up the puck and place it at the goal"``).
"""
from __future__ import annotations

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the ring and place it on the peg",
    "basketball-v3": "pick up the basketball and place it in the hoop",
    "bin-picking-v3": "pick up the puck and place it in the target bin",
    "box-close-v3": "pick up the box lid and place it on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "pick up the ring and remove it from the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock down",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock up",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "close the faucet by turning the handle right",
    "faucet-open-v3": "open the faucet by turning the handle left",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "hand-insert-v3": "insert the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "pick up the peg and insert it into the hole from the side",
    "peg-unplug-side-v3": "pull the peg out of the hole from the side",
    "pick-out-of-hole-v3": "pick up the peg out of the hole and place it at the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate back into the cabinet from the side",
    "plate-slide-back-v3": "slide the plate back into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "push-back-v3": "push the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "push the ball into the goal",
    "stick-pull-v3": "pick up the stick and pull the container with it",
    "stick-push-v3": "pick up the stick and push the container with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "close the window",
    "window-open-v3": "open the window",
}
