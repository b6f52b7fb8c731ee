"""``python -m captioner.tiny [--preset NAME] [--out DIR]``: build one caption model and print its directory."""

import captioner.tiny

captioner.tiny.MODELS.main(captioner.tiny.__doc__)
