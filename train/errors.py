"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
  """A problem with the user's input (config, names, data, workdir), not a bug."""


def close_matches(name, choices, n=3):
  import difflib
  hits = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n)
  return f' (did you mean {", ".join(hits)}?)' if hits else ''
