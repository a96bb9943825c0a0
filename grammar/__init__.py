"""Lark grammars for aihow's small languages; shipped inside the wheel as planner.grammar."""
