"""The data repo providers: Zenodo, Figshare, HydroShare, Dataverse and CKAN.

A data launch names one record and has no ref. Its data site is where the record
lives: fixed for Zenodo, Figshare and HydroShare; for Dataverse the installation of
the DOI prefix (`DATAVERSE_DOI_HOSTS`) or, for a URL spec, the URL's host, otherwise
unknown (None: resolving a DOI needs doi.org, and parsing does no I/O); for CKAN the
dataset URL's host.

A data provider's build slug holds what only its API knows (a record id, a version),
so `build_slug` is None and `data_build_slug(resolved)` makes it from the answer.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import escapism

from .base import REF_BAD, Provider, ProviderSpec, SpecError, Tokens, http_url, keyed, normalized_url, unescape

# Data sites of the providers whose data lives in one place.
FIXED_DATA_SITES = {
    "zenodo": "zenodo.org",
    "figshare": "figshare.com",
    "hydroshare": "hydroshare.org",
}

# Well-known Dataverse installations by DOI prefix. A DOI not listed here has an
# unknown data site (resolving it needs doi.org, and the parser does no I/O).
DATAVERSE_DOI_HOSTS = {
    "10.7910": "dataverse.harvard.edu",        # Harvard Dataverse
    "10.5683": "borealisdata.ca",              # Borealis (Canada)
    "10.18710": "dataverse.no",                # DataverseNO
    "10.34894": "dataverse.nl",                # DataverseNL
    "10.11588": "heidata.uni-heidelberg.de",   # heiDATA
}

_DOI = re.compile(r"(10\.\d{4,9})/\S+")
_HYDROSHARE_ID = re.compile(r"[0-9a-f]{32}")


class DataProvider(Provider):
    data = True

    def tokenize(self, spec: str) -> Tokens:
        record = unquote(spec.rstrip("/"))
        if not record:
            raise ValueError(f"Spec for {self.prefix} is empty")
        return Tokens((spec.rstrip("/"),), "")

    def record(self, spec: str) -> str:
        """The record the spec names, unescaped."""
        return unquote(self.tokenize(spec).repo[0])

    def repo_url(self, spec: str) -> str:
        return f"https://doi.org/{self.record(spec)}"

    def doi(self, parts: list[str]) -> str:
        doi = "/".join(unescape(p) for p in parts)
        if not _DOI.fullmatch(doi) or "" in doi.split("/") or REF_BAD.search(doi.replace(":", "")):
            raise SpecError(f"{self.name} spec must be a DOI such as 10.5281/zenodo.3242074")
        return doi


class FixedSiteDOI(DataProvider):
    """A DOI provider whose records all live on one site (Zenodo, Figshare)."""

    def parse(self, parts: list[str]) -> ProviderSpec:
        return keyed(f"{self.prefix}/{self.doi(parts).lower()}", "", FIXED_DATA_SITES[self.prefix])

    def data_build_slug(self, resolved: str) -> str:
        # `resolved`: zenodo, the record id (`3242074`); figshare, article id and version (`9782777.v1`)
        return f"{self.prefix}-{resolved}"


class Zenodo(FixedSiteDOI):
    prefix, name = "zenodo", "Zenodo"


class Figshare(FixedSiteDOI):
    prefix, name = "figshare", "Figshare"


class HydroShare(DataProvider):
    prefix, name = "hydroshare", "HydroShare"

    def parse(self, parts: list[str]) -> ProviderSpec:
        resource = unescape(parts[0]) if len(parts) == 1 else ""
        if not _HYDROSHARE_ID.fullmatch(resource):
            raise SpecError("HydroShare spec must be a resource id of 32 lower-case hex characters")
        return keyed(f"hydroshare/{resource}", "", FIXED_DATA_SITES["hydroshare"])

    def data_build_slug(self, resolved: str) -> str:
        # `resolved`: `<resource id>.v<epoch>`, also the image tag
        return f"hydroshare-{resolved}"

    def repo_url(self, spec: str) -> str:
        return f"https://www.hydroshare.org/resource/{self.record(spec).rstrip('/').rsplit('/', 1)[-1]}"


class Dataverse(DataProvider):
    prefix, name = "dataverse", "Dataverse"

    def parse(self, parts: list[str]) -> ProviderSpec:
        decoded = "/".join(unescape(p) for p in parts)
        if decoded.lower().startswith(("http:", "https:")):
            url = http_url(decoded, "Dataverse URL", allow_query=True)
            return keyed(f"dataverse/{normalized_url(url, strip_git=False).lower()}", "", url.hostname)
        doi = self.doi(parts)
        return keyed(f"dataverse/{doi.lower()}", "", DATAVERSE_DOI_HOSTS.get(doi.split("/", 1)[0]))

    def data_build_slug(self, resolved: str) -> str:
        # `resolved`: the dataset identifier (`DVN/TJCLKP`), escaped with escapism's
        # default safe set (letters, digits), as DataverseProvider does
        return "dataverse-" + escapism.escape(resolved, escape_char="-").lower()


class CKAN(DataProvider):
    prefix, name = "ckan", "CKAN"

    def parse(self, parts: list[str]) -> ProviderSpec:
        decoded = "/".join(unescape(p) for p in parts)
        url = http_url(decoded, "CKAN dataset URL", allow_query=True)
        if not url.path.strip("/"):
            raise SpecError("CKAN dataset URL must name a dataset")
        return keyed(f"ckan/{normalized_url(url, strip_git=False)}", "", url.hostname)

    def repo_url(self, spec: str) -> str:
        return self.record(spec)  # the dataset URL
