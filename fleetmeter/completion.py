"""Shell completion for ``fleetmeter``: a static bash/zsh script generated from the argparse parser.

:func:`completion_script` walks ``build_parser()``'s subcommands once and writes what each command
path (``""``, ``"sweep"``, ``"sweep submit"`` ...) offers: its subcommands, its flags, which flags take
a value, and the choices of those that have them. The script needs nothing at completion time (no
Python start-up, no argcomplete): bash uses it directly, zsh through ``bashcompinit``. Words that are
neither a subcommand nor a flag (files, ids) complete as file names.
"""
from __future__ import annotations

import argparse
import re
from typing import Dict, Iterator, List, Tuple

__all__ = ["completion_script", "command_specs"]

#: What a command path offers: subcommands, flags, flags that take a value, {flag: choices}.
Spec = Tuple[List[str], List[str], List[str], Dict[str, List[str]]]
_SAFE = re.compile(r"^[A-Za-z0-9_.:@%+=,/-]+$")


def _subparsers(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    out: Dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def command_specs(parser: argparse.ArgumentParser, path: str = "") -> Iterator[Tuple[str, Spec]]:
    """``(path, (subcommands, flags, flags taking a value, {flag: choices}))`` for ``parser`` and every
    subcommand below it, depth first."""
    subs = _subparsers(parser)
    flags: List[str] = []
    valued: List[str] = []
    choices: Dict[str, List[str]] = {}
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        flags += action.option_strings
        if action.nargs != 0:
            valued += action.option_strings
            if action.choices:
                for flag in action.option_strings:
                    choices[flag] = [str(c) for c in action.choices]
    yield path, (list(subs), flags, valued, choices)
    for name, child in subs.items():
        yield from command_specs(child, f"{path} {name}".strip())


def _words(values: List[str]) -> str:
    """Space-joined words for a double-quoted shell string; anything unsafe is left out."""
    return " ".join(v for v in values if _SAFE.match(v))


def _bash_function(parser: argparse.ArgumentParser, prog: str) -> str:
    fn = "_" + re.sub(r"\W", "_", prog)
    spec_cases, choice_cases = [], []
    for path, (subs, flags, valued, choices) in command_specs(parser):
        spec_cases.append(f'        "{path}") subs="{_words(subs)}"; flags="{_words(flags)}"; '
                          f'valued=" {_words(valued)} " ;;')
        choice_cases += [f'        "{path}|{flag}") choices="{_words(values)}" ;;' for flag, values in choices.items()]
    return f"""{fn}_spec() {{
    subs=""; flags=""; valued=" "
    case "$1" in
{chr(10).join(spec_cases)}
    esac
}}

{fn}_choices() {{
    choices=""
    case "$1|$2" in
{chr(10).join(choice_cases)}
        *) return 1 ;;
    esac
}}

{fn}() {{
    local cur prev word cmdpath="" subs flags valued choices skip=0 i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev=""
    [ "$COMP_CWORD" -gt 0 ] && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        {fn}_spec "$cmdpath"
        case "$word" in
            -*) case "$valued" in *" $word "*) skip=1 ;; esac ;;
            *) case " $subs " in *" $word "*) cmdpath="${{cmdpath:+$cmdpath }}$word" ;; esac ;;
        esac
    done
    {fn}_spec "$cmdpath"
    if [ "$skip" = 1 ]; then
        if {fn}_choices "$cmdpath" "$prev"; then
            COMPREPLY=($(compgen -W "$choices" -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
    elif [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [ -n "$subs" ]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}}
"""


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` (its ``prog`` is the command) for ``shell`` (``bash`` or ``zsh``)."""
    prog = parser.prog
    fn = "_" + re.sub(r"\W", "_", prog)
    body = _bash_function(parser, prog)
    if shell == "bash":
        return f"# {prog} completion for bash: eval \"$({prog} completion bash)\"\n{body}" \
               f"complete -o default -F {fn} {prog}\n"
    if shell == "zsh":
        return (f"# {prog} completion for zsh: eval \"$({prog} completion zsh)\" (after compinit)\n"
                "autoload -U +X bashcompinit && bashcompinit\n"
                f"{body}complete -o default -F {fn} {prog}\n")
    raise ValueError(f"unknown shell {shell!r}: bash or zsh")
