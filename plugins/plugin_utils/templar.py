# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The render template function on Ansible's templar, shared by the render
and workflow action plugins and the `guardrail` command."""
from __future__ import annotations

import json


def templater(templar):
    """A render_utils template function backed by Ansible's templar."""
    try:
        from ansible.template import trust_as_template
    except ImportError:  # ansible-core < 2.19 trusts every template string
        def trust_as_template(value):
            return value

    def template(text, variables):
        data_templar = templar.copy_with_new_env(available_variables=variables)
        result = data_templar.template(trust_as_template(text), escape_backslashes=False,
                                       preserve_trailing_newlines=True)
        if result is None:
            return ""
        if isinstance(result, (dict, list)):
            return json.dumps(result, sort_keys=True, indent=2) + "\n"
        return str(result)
    return template


def standalone_templater():
    """A template function on Ansible's templar alone (no inventory, no play),
    made on first use, so a run that renders nothing never imports Ansible's
    templating."""
    made = []

    def template(text, variables):
        if not made:
            from ansible.parsing.dataloader import DataLoader
            from ansible.template import Templar
            made.append(templater(Templar(loader=DataLoader())))
        return made[0](text, variables)
    return template
