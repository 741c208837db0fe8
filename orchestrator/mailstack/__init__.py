"""mailstack: a real Postfix + Dovecot + MySQL mail stack in Docker."""

from mailstack.errors import MailstackError

__all__ = ["MailStack", "MailstackError"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import mailstack` cheap for the pytest plugin
    if name == "MailStack":
        from mailstack.api import MailStack

        return MailStack
    raise AttributeError(name)
