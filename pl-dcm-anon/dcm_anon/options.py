"""dcm_anon's flags (the parser ChRIS reads) and the typed settings a run takes."""

from __future__ import annotations

from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from dataclasses import dataclass, replace

from ctsvd_common.cli import Whole, add_version
from ctsvd_common.stage import Policy, add_policy_flags
from dcm_anon.profile import RETAIN_OPTIONS, RetainOption


parser = ArgumentParser(
    description="De-identify the CT images of the input tree by the DICOM PS3.15 Annex E "
                "Basic Application Level Confidentiality Profile and an allow-list of what a CT "
                "image needs (all else is removed), with the profile's options as flags, and "
                "write them as series-NNN/NNNN.dcm. Other files are not copied. UIDs are replaced "
                "consistently across all files; PatientID and PatientName become one pseudonym "
                "per patient. Writes dcm_anon.report.json and a tag listing of the de-identified "
                "files in tag-report/.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
for _option in RETAIN_OPTIONS:
    parser.add_argument(_option.flag, dest=_option.dest, action="store_true", default=False,
                        help=_option.help)
parser.add_argument("--pseudonym-key", dest="pseudonym_key", type=str, default="",
                    help="secret key for the UID and patient pseudonym mapping; the same key "
                         "gives the same mapping in every run. Empty: a random key for this run "
                         "(the mapping cannot be reproduced)")
parser.add_argument("--no-tag-report", dest="no_tag_report", action="store_true", default=False,
                    help="do not make the tag listing of the output in tag-report/")
parser.add_argument("--workers", dest="workers", type=int, default=0, action=Whole,
                    help="processes that de-identify files side by side; 0: one per CPU this "
                         "container may use (fewer for small inputs)")
add_policy_flags(parser)
add_version(parser, "pl-dcm-anon")


@dataclass(frozen=True)
class Settings:
    """One run's flags, typed; the fields follow the parser's flags, as the run report lists them."""

    keep_dates: bool = False
    shift_dates: bool = False
    clean_descriptors: bool = False
    keep_safe_private: bool = False
    keep_uids: bool = False
    keep_device_id: bool = False
    keep_patient_chars: bool = False
    keep_institution_id: bool = False
    pseudonym_key: str = ""
    no_tag_report: bool = False
    workers: int = 0
    policy: Policy = Policy()

    @classmethod
    def from_options(cls, options: Namespace) -> "Settings":
        return cls(**{o.dest: bool(getattr(options, o.dest)) for o in RETAIN_OPTIONS},
                   pseudonym_key=options.pseudonym_key, no_tag_report=options.no_tag_report,
                   workers=options.workers, policy=Policy.from_options(options))

    @property
    def retain(self) -> tuple[RetainOption, ...]:
        """The PS3.15 options chosen, in the profile's order."""
        return tuple(o for o in RETAIN_OPTIONS if getattr(self, o.dest))

    def shown(self) -> "Settings":
        """The settings as the run report lists them: the key itself never appears."""
        return replace(self, pseudonym_key="(given, not shown)") if self.pseudonym_key else self
