"""``python -m animator.tiny``: build a local video model."""

from animator.tiny import main

main()
