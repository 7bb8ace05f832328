"""A command whose ``--help`` ends with worked examples, kept as written."""

from argparse import RawDescriptionHelpFormatter

from django.core.management.base import BaseCommand


class ExamplesCommand(BaseCommand):
    """``examples``: text shown after the options in ``--help`` (line breaks kept)."""

    examples = ""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        parser.epilog = self.examples
        return parser
