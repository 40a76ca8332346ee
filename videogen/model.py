"""Old module path of the DiT. Pipeline directories saved before the package layout name
`videogen.model` in their model_index.json, and diffusers looks the class and its loading
mixins up on that module: so this name *is* `videogen.models.dit`."""

import sys

from videogen.models import dit

sys.modules[__name__] = dit
