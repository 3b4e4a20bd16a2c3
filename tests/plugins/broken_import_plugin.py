"""A plugin that fails at import, as a plugin with a missing dependency would."""

import llmcompare_this_module_does_not_exist  # noqa: F401
