"""Specification of the audit Policy checker: the kube-apiserver's table tests, ported as facts.

Upstream: kubernetes/apiserver pkg/audit/policy/checker_test.go @ 24a394e5 (Apache-2.0), see
tests/data/k8s/PROVENANCE.md. Each upstream request (authorizer attributes) is written here as the
audit Event the apiserver records for it: user, verb, objectRef (present exactly for resource
requests) and requestURI (the path of non-resource requests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.normalize.k8s_policy import AuditPolicy, PolicyDecision, apply_decision, parse_policy

from .helpers import DATA

K8S = DATA / "k8s"
PACKAGING = Path(__file__).resolve().parents[2] / "packaging" / "audit-policy.yaml"

RR, REQ, MD, NONE = "RequestResponse", "Request", "Metadata", "None"
RECEIVED, STARTED, COMPLETE, PANIC = "RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"

TIM = {"username": "tim@k8s.io", "groups": ["humans", "developers"]}

# The upstream `attrs`, as audit Events.
REQUESTS: dict[str, dict[str, Any]] = {
    "namespaced": {"user": TIM, "verb": "get", "requestURI": "/api/v1/namespaces/default/pods/busybox",
                   "objectRef": {"namespace": "default", "apiVersion": "v1", "resource": "pods",
                                 "name": "busybox"}},
    "cluster": {"user": TIM, "verb": "get",
                "requestURI": "/apis/rbac.authorization.k8s.io/v1beta1/clusterroles/edit",
                "objectRef": {"apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1beta1",
                              "resource": "clusterroles", "name": "edit"}},
    "nonResource": {"user": TIM, "verb": "get", "requestURI": "/logs/kubelet.log"},
    "subresource": {"user": TIM, "verb": "get", "requestURI": "/api/v1/namespaces/default/pods/busybox",
                    "objectRef": {"namespace": "default", "apiVersion": "v1", "resource": "pods",
                                  "subresource": "log", "name": "busybox"}},
    "Unauthorized": {"verb": "get", "requestURI": "/api/v1/namespaces/default/pods/busybox",
                     "objectRef": {"namespace": "default", "apiVersion": "v1", "resource": "pods",
                                   "name": "busybox"}},
    "ClusterRoleUpdate": {"user": TIM, "verb": "update",
                          "requestURI": "/apis/rbac.authorization.k8s.io/v1beta1/clusterroles/somerole",
                          "objectRef": {"apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1beta1",
                                        "resource": "clusterroles", "subresource": "status", "name": "somerole"}},
}

# The upstream `rules`, as Policy YAML rule objects.
RULES: dict[str, dict[str, Any]] = {
    "default": {"level": MD},
    "create": {"level": REQ, "verbs": ["create"]},
    "tims": {"level": MD, "users": ["tim@k8s.io"]},
    "humans": {"level": MD, "userGroups": ["humans"]},
    "serviceAccounts": {"level": REQ, "userGroups": ["system:serviceaccounts"]},
    "getPods": {"level": RR, "verbs": ["get"], "resources": [{"resources": ["pods"]}]},
    "getPodLogs": {"level": REQ, "verbs": ["get"], "resources": [{"resources": ["pods/log"]}]},
    "getPodWildcardMatching": {"level": REQ, "verbs": ["get"], "resources": [{"resources": ["*"]}]},
    "getPodResourceWildcardMatching": {"level": REQ, "verbs": ["get"], "resources": [{"resources": ["*/log"]}]},
    "getPodSubResourceWildcardMatching": {"level": REQ, "verbs": ["get"], "resources": [{"resources": ["pods/*"]}]},
    "getClusterRoles": {"level": RR, "verbs": ["get"], "namespaces": [""],
                        "resources": [{"group": "rbac.authorization.k8s.io", "resources": ["clusterroles"]}]},
    "getGroupWildCardMatchingWithSubresourceWildcardMatching": {
        "level": RR, "verbs": ["update"], "resources": [{"group": "*", "resources": ["*/status"]}]},
    "getLogs": {"level": RR, "verbs": ["get"], "nonResourceURLs": ["/logs*"]},
    "getMetrics": {"level": REQ, "verbs": ["get"], "nonResourceURLs": ["/metrics"]},
    "clusterRoleEdit": {"level": REQ, "resources": [{"group": "rbac.authorization.k8s.io",
                                                      "resources": ["clusterroles"], "resourceNames": ["edit"]}]},
    "omit RequestReceived": {"level": REQ, "omitStages": [RECEIVED]},
    "only audit panic": {"level": REQ, "omitStages": [RECEIVED, STARTED, COMPLETE]},
}

# testAuditLevel: (request, expected level, rules in order); run with and without policy stages.
AUDIT_LEVEL = [
    ("namespaced", MD, ["default"]),
    ("namespaced", NONE, ["create"]),
    ("namespaced", MD, ["tims"]),
    ("namespaced", MD, ["humans"]),
    ("namespaced", NONE, ["serviceAccounts"]),
    ("namespaced", RR, ["getPods"]),
    ("namespaced", NONE, ["getClusterRoles"]),
    ("namespaced", NONE, ["getLogs"]),
    ("namespaced", NONE, ["getMetrics"]),
    ("namespaced", MD, ["getMetrics", "serviceAccounts", "default"]),
    ("namespaced", RR, ["getMetrics", "getPods", "default"]),
    ("namespaced", RR, ["getPodLogs", "getPods"]),
    ("cluster", MD, ["default"]),
    ("cluster", NONE, ["create"]),
    ("cluster", MD, ["tims"]),
    ("cluster", MD, ["humans"]),
    ("cluster", NONE, ["serviceAccounts"]),
    ("cluster", NONE, ["getPods"]),
    ("cluster", RR, ["getClusterRoles"]),
    ("cluster", REQ, ["clusterRoleEdit", "getClusterRoles"]),
    ("cluster", NONE, ["getLogs"]),
    ("cluster", NONE, ["getMetrics"]),
    ("cluster", MD, ["getMetrics", "serviceAccounts", "default"]),
    ("cluster", RR, ["getMetrics", "getClusterRoles", "default"]),
    ("cluster", NONE, ["getPodLogs", "getPods"]),
    ("nonResource", MD, ["default"]),
    ("nonResource", NONE, ["create"]),
    ("nonResource", MD, ["tims"]),
    ("nonResource", MD, ["humans"]),
    ("nonResource", NONE, ["serviceAccounts"]),
    ("nonResource", NONE, ["getPods"]),
    ("nonResource", NONE, ["getClusterRoles"]),
    ("nonResource", RR, ["getLogs"]),
    ("nonResource", NONE, ["getMetrics"]),
    ("nonResource", MD, ["getMetrics", "serviceAccounts", "default"]),
    ("nonResource", RR, ["getLogs", "getClusterRoles", "default"]),
    ("nonResource", NONE, ["getPodLogs", "getPods"]),
    ("subresource", REQ, ["getPodLogs", "getPods"]),
    ("subresource", REQ, ["getPodWildcardMatching"]),
    ("subresource", REQ, ["getPodResourceWildcardMatching"]),
    ("subresource", REQ, ["getPodSubResourceWildcardMatching"]),
    ("Unauthorized", NONE, ["tims"]),
    ("Unauthorized", MD, ["tims", "default"]),
    ("Unauthorized", NONE, ["humans"]),
    ("Unauthorized", MD, ["humans", "default"]),
    ("ClusterRoleUpdate", RR, ["getGroupWildCardMatchingWithSubresourceWildcardMatching"]),
]

POLICY_STAGES = [RECEIVED, STARTED]  # TestCheckerPolicyOmitStages

# (request, expected level, policy stages, expected omit stages, rules): the TestChecker and
# TestCheckerPolicyOmitStages cases beyond testAuditLevel.
OMIT_STAGES = [
    ("namespaced", REQ, [], [RECEIVED], ["omit RequestReceived", "getPods", "default"]),
    ("namespaced", REQ, [], [RECEIVED, STARTED, COMPLETE], ["only audit panic", "getPods", "default"]),
    ("cluster", REQ, [], [RECEIVED], ["omit RequestReceived", "getPods", "default"]),
    ("cluster", REQ, [], [RECEIVED, STARTED, COMPLETE], ["only audit panic", "getPods", "default"]),
    ("nonResource", REQ, [], [RECEIVED], ["omit RequestReceived", "getPods", "default"]),
    ("nonResource", REQ, [], [RECEIVED, STARTED, COMPLETE], ["only audit panic", "getPods", "default"]),
    ("namespaced", REQ, POLICY_STAGES, [RECEIVED, STARTED], ["omit RequestReceived", "getPods", "default"]),
    ("namespaced", REQ, POLICY_STAGES, [RECEIVED, STARTED, COMPLETE], ["only audit panic", "getPods", "default"]),
    ("cluster", REQ, POLICY_STAGES, [RECEIVED, STARTED], ["omit RequestReceived", "getPods", "default"]),
    ("cluster", REQ, POLICY_STAGES, [RECEIVED, STARTED, COMPLETE], ["only audit panic", "getPods", "default"]),
    ("nonResource", MD, POLICY_STAGES, [RECEIVED, STARTED], ["default", "omit RequestReceived", "getPods"]),
    ("nonResource", REQ, POLICY_STAGES, [RECEIVED, STARTED, COMPLETE], ["only audit panic", "getPods", "default"]),
]

# TestUnionStages: (policy stages, rule stages, union).
UNION = [
    ([], [], []),
    ([RECEIVED], [], [RECEIVED]),
    ([RECEIVED], [RECEIVED], [RECEIVED]),
    ([RECEIVED], [STARTED], [RECEIVED, STARTED]),
    ([RECEIVED, RECEIVED], [RECEIVED, RECEIVED], [RECEIVED]),
    ([RECEIVED, STARTED], [PANIC, RECEIVED], [RECEIVED, STARTED, PANIC]),
    (None, [RECEIVED], [RECEIVED]),
]

# TestOmitManagedFields: (policy default, rule override or None, expected).
MANAGED_FIELDS = [
    (False, None, False),
    (True, None, True),
    (True, False, False),
    (False, True, True),
]


def policy_of(rules: list[dict[str, Any]], **top: Any) -> AuditPolicy:
    import orjson

    document = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules, **top}
    return parse_policy(orjson.dumps(document).decode(), "test")  # JSON is YAML


def evaluate(request: str, rule_names: list[str], policy_stages: list[str] | None) -> PolicyDecision:
    top = {"omitStages": policy_stages} if policy_stages else {}
    return policy_of([RULES[name] for name in rule_names], **top).evaluate(REQUESTS[request])


def _id(request: str, level: str, rules: list[str]) -> str:
    return f"{request}-{'+'.join(rules)}->{level}"


CHECKER_CASES = [
    pytest.param(request, level, stages, rules, id=f"{'policyStages-' if stages else ''}{_id(request, level, rules)}")
    for stages in (None, POLICY_STAGES)
    for request, level, rules in AUDIT_LEVEL
]


@pytest.mark.parametrize(("request_name", "level", "policy_stages", "rule_names"), CHECKER_CASES)
def test_upstream_audit_level_table(request_name: str, level: str, policy_stages: list[str] | None,
                                    rule_names: list[str]) -> None:
    decision = evaluate(request_name, rule_names, policy_stages)
    assert decision.level == level
    assert decision.omit_stages == frozenset(policy_stages or ())


@pytest.mark.parametrize(("request_name", "level", "policy_stages", "omit", "rule_names"), OMIT_STAGES,
                         ids=[f"{i}-{c[0]}-{'+'.join(c[4])}" for i, c in enumerate(OMIT_STAGES)])
def test_upstream_omit_stages_are_the_union_of_rule_and_policy(
        request_name: str, level: str, policy_stages: list[str], omit: list[str], rule_names: list[str]) -> None:
    decision = evaluate(request_name, rule_names, policy_stages)
    assert decision.level == level
    assert decision.omit_stages == frozenset(omit)


@pytest.mark.parametrize(("policy_stages", "rule_stages", "union"), UNION)
def test_upstream_union_of_stages(policy_stages: list[str] | None, rule_stages: list[str], union: list[str]) -> None:
    top = {"omitStages": policy_stages} if policy_stages is not None else {}
    policy = policy_of([{"level": RR, "omitStages": rule_stages}], **top)
    assert policy.evaluate({"verb": "get"}).omit_stages == frozenset(union)


@pytest.mark.parametrize(("policy_default", "rule_override", "expected"), MANAGED_FIELDS)
def test_upstream_omit_managed_fields_rule_overrides_policy(
        policy_default: bool, rule_override: bool | None, expected: bool) -> None:
    rule: dict[str, Any] = {"level": RR, "verbs": ["get"]}
    if rule_override is not None:
        rule["omitManagedFields"] = rule_override
    policy = policy_of([rule], omitManagedFields=policy_default)
    assert policy.evaluate({"verb": "get"}).omit_managed_fields is expected


def test_the_whole_upstream_table_is_ported() -> None:
    assert len(CHECKER_CASES) + len(OMIT_STAGES) + len(UNION) + len(MANAGED_FIELDS) == 92 + 12 + 7 + 4


# ---- beyond the upstream table -------------------------------------------------------------


def test_no_match_is_level_none_with_the_policy_stages_and_no_rule() -> None:
    decision = policy_of([RULES["create"]], omitStages=[RECEIVED]).evaluate(REQUESTS["namespaced"])
    assert decision == PolicyDecision(NONE, frozenset({RECEIVED}), False, None)


def test_the_first_matching_rule_is_named_by_index() -> None:
    assert evaluate("namespaced", ["getMetrics", "serviceAccounts", "default"], None).rule == 2


def test_namespace_empty_string_matches_cluster_scoped_objects_only() -> None:
    policy = policy_of([{"level": MD, "namespaces": [""]}])
    assert policy.evaluate(REQUESTS["cluster"]).level == MD
    assert policy.evaluate(REQUESTS["namespaced"]).level == NONE
    assert policy.evaluate(REQUESTS["nonResource"]).level == NONE  # namespaces imply resource requests


def test_resource_names_restrict_the_rule_to_named_objects() -> None:
    policy = policy_of([RULES["clusterRoleEdit"]])
    assert policy.evaluate(REQUESTS["cluster"]).level == REQ
    assert policy.evaluate(REQUESTS["ClusterRoleUpdate"]).level == NONE


def test_resource_without_subresource_spec_does_not_match_a_subresource() -> None:
    assert evaluate("subresource", ["getPods"], None).level == NONE


def test_non_resource_url_is_matched_without_the_query_string() -> None:
    policy = policy_of([{"level": MD, "nonResourceURLs": ["/metrics"]}])
    assert policy.evaluate({"verb": "get", "requestURI": "/metrics?format=text"}).level == MD
    assert policy.evaluate({"verb": "get", "requestURI": "/metrics2"}).level == NONE


def test_bare_star_non_resource_url_matches_every_non_resource_request() -> None:
    policy = policy_of([{"level": MD, "nonResourceURLs": ["*"]}])
    assert policy.evaluate(REQUESTS["nonResource"]).level == MD
    assert policy.evaluate(REQUESTS["namespaced"]).level == NONE


def test_group_entry_without_resources_matches_the_whole_group() -> None:
    policy = policy_of([{"level": MD, "resources": [{"group": "rbac.authorization.k8s.io"}]}])
    assert policy.evaluate(REQUESTS["cluster"]).level == MD
    assert policy.evaluate(REQUESTS["namespaced"]).level == NONE  # core group


def test_impersonated_user_does_not_match_users_the_requester_does() -> None:
    event = {**REQUESTS["namespaced"], "impersonatedUser": {"username": "admin", "groups": ["system:masters"]}}
    assert policy_of([{"level": MD, "users": ["admin"]}]).evaluate(event).level == NONE
    assert policy_of([{"level": MD, "userGroups": ["system:masters"]}]).evaluate(event).level == NONE
    assert policy_of([{"level": MD, "users": ["tim@k8s.io"]}]).evaluate(event).level == MD


def test_wrongly_typed_event_fields_never_raise_and_match_as_absent() -> None:
    policy = policy_of([RULES["tims"], RULES["getPods"], RULES["getLogs"]])
    for event in ({"user": "x", "verb": 1, "objectRef": []}, {"user": {"groups": "humans"}, "objectRef": "pods"},
                  {"requestURI": 7}, {}):
        assert policy.evaluate(event).level == NONE


# ---- applying a decision -------------------------------------------------------------------


def _event() -> dict[str, Any]:
    managed = [{"manager": "kubectl", "operation": "Update"}]
    return {
        "level": RR, "verb": "create",
        "requestObject": {"kind": "Pod", "metadata": {"name": "p", "managedFields": managed}},
        "responseObject": {"kind": "PodList", "metadata": {},
                           "items": [{"metadata": {"name": "a", "managedFields": managed}}]},
    }


def test_metadata_level_removes_both_objects_and_lowers_the_recorded_level() -> None:
    event = _event()
    assert apply_decision(event, PolicyDecision(MD, frozenset(), False, 0)) == (
        ["requestObject", "responseObject"], True)
    assert event == {"level": MD, "verb": "create"}


def test_request_level_removes_the_response_object_only() -> None:
    event = _event()
    assert apply_decision(event, PolicyDecision(REQ, frozenset(), False, 0)) == (["responseObject"], True)
    assert "requestObject" in event and event["level"] == REQ


def test_request_response_level_keeps_everything() -> None:
    event = _event()
    assert apply_decision(event, PolicyDecision(RR, frozenset(), False, 0)) == ([], False)
    assert event == _event()


def test_lower_recorded_level_is_never_raised() -> None:
    event = {"level": MD, "verb": "get"}
    assert apply_decision(event, PolicyDecision(RR, frozenset(), False, 0)) == ([], False)
    assert event["level"] == MD


def test_omit_managed_fields_strips_objects_and_list_items() -> None:
    event = _event()
    removed, changed = apply_decision(event, PolicyDecision(RR, frozenset(), True, 0))
    assert removed == ["requestObject.metadata.managedFields", "responseObject.items.0.metadata.managedFields"]
    assert event["requestObject"]["metadata"] == {"name": "p"}
    assert event["responseObject"]["items"][0]["metadata"] == {"name": "a"}


# ---- real policies -------------------------------------------------------------------------


def load(name: str) -> AuditPolicy:
    path = K8S / name if name != "packaging" else PACKAGING
    return parse_policy(path.read_text(), str(path))


def resource_event(user: str, verb: str, resource: str, *, group: str = "", namespace: str = "default",
                   name: str = "x", subresource: str = "", groups: tuple[str, ...] = ("system:authenticated",),
                   stage: str = COMPLETE) -> dict[str, Any]:
    ref = {"resource": resource, "namespace": namespace, "name": name, "apiGroup": group}
    if subresource:
        ref["subresource"] = subresource
    return {"kind": "Event", "stage": stage, "verb": verb, "user": {"username": user, "groups": list(groups)},
            "objectRef": ref, "requestURI": f"/api/v1/namespaces/{namespace}/{resource}/{name}"}


def url_event(user: str, uri: str, groups: tuple[str, ...] = ("system:authenticated",)) -> dict[str, Any]:
    return {"kind": "Event", "stage": COMPLETE, "verb": "get", "user": {"username": user, "groups": list(groups)},
            "requestURI": uri}


@pytest.mark.parametrize("name", ["k8s-docs-audit-policy.yaml", "gce-configure-helper-audit-policy.yaml",
                                  "falco-k8saudit-audit-policy.yaml", "packaging"])
def test_real_policies_parse(name: str) -> None:
    assert load(name).rules


def test_k8s_docs_policy_decides_as_its_comments_say() -> None:
    policy = load("k8s-docs-audit-policy.yaml")
    assert policy.evaluate(resource_event("alice", "create", "pods")).level == RR
    assert policy.evaluate(resource_event("alice", "get", "pods", subresource="log")).level == MD
    assert policy.evaluate(resource_event("alice", "get", "configmaps", name="controller-leader")).level == NONE
    assert policy.evaluate(resource_event("system:kube-proxy", "watch", "endpoints")).level == NONE
    assert policy.evaluate(url_event("alice", "/apis/apps/v1")).level == NONE
    assert policy.evaluate(resource_event("alice", "update", "configmaps", namespace="kube-system")).level == REQ
    assert policy.evaluate(resource_event("alice", "get", "secrets")).level == MD
    assert policy.evaluate(resource_event("alice", "get", "services")).level == REQ
    decision = policy.evaluate(resource_event("alice", "get", "deployments", group="apps"))
    assert (decision.level, decision.rule, decision.omit_stages) == (MD, 8, frozenset({RECEIVED}))


def test_gce_policy_decides_as_its_comments_say() -> None:
    policy = load("gce-configure-helper-audit-policy.yaml")
    node = ("system:nodes", "system:authenticated")
    assert policy.evaluate(resource_event("system:node:n1", "get", "nodes", namespace="", groups=node)).level == NONE
    assert policy.evaluate(url_event("alice", "/healthz/etcd")).level == NONE
    assert policy.evaluate(resource_event("alice", "create", "events")).level == NONE
    status = resource_event("system:node:n1", "patch", "pods", subresource="status", groups=node)
    assert policy.evaluate(status).level == REQ
    assert policy.evaluate(resource_event("alice", "get", "secrets")).level == MD
    token = resource_event("alice", "create", "serviceaccounts", subresource="token")
    assert policy.evaluate(token).level == MD
    assert policy.evaluate(resource_event("alice", "list", "deployments", group="apps")).level == REQ
    assert policy.evaluate(resource_event("alice", "create", "clusterroles", group="rbac.authorization.k8s.io",
                                          namespace="")).level == RR
    assert policy.evaluate(resource_event("alice", "create", "widgets", group="example.com")).level == MD


def test_falco_policy_keeps_what_falco_rules_need() -> None:
    policy = load("falco-k8saudit-audit-policy.yaml")
    assert policy.evaluate(resource_event("alice", "create", "pods")).level == RR
    assert policy.evaluate(resource_event("alice", "create", "clusterrolebindings",
                                          group="rbac.authorization.k8s.io", namespace="")).level == RR
    assert policy.evaluate(resource_event("alice", "create", "configmaps")).level == RR
    assert policy.evaluate(resource_event("alice", "create", "secrets")).level == MD
    assert policy.evaluate(resource_event("alice", "create", "namespaces", namespace="foo")).level == REQ


def test_packaged_policy_decides_as_its_comments_say() -> None:
    policy = load("packaging")
    assert policy.omit_managed_fields and policy.omit_stages == frozenset({RECEIVED})
    assert policy.evaluate(url_event("system:anonymous", "/readyz")).rule == 0
    assert policy.evaluate(resource_event("system:kube-proxy", "watch", "endpointslices",
                                          group="discovery.k8s.io")).level == NONE
    node = ("system:nodes", "system:authenticated")
    secret_read = policy.evaluate(resource_event("system:node:n1", "get", "secrets", groups=node))
    assert (secret_read.level, secret_read.rule) == (MD, 4)
    assert policy.evaluate(resource_event("system:node:n1", "get", "pods", groups=node)).level == NONE
    binding = resource_event("alice", "create", "clusterrolebindings", group="rbac.authorization.k8s.io")
    assert policy.evaluate(binding).level == RR
    assert policy.evaluate(resource_event("alice", "patch", "daemonsets", group="apps")).level == RR
    exec_ = resource_event("alice", "create", "pods", subresource="exec")
    assert (policy.evaluate(exec_).level, policy.evaluate(exec_).rule) == (MD, 9)
    assert policy.evaluate(resource_event("alice", "create", "tokenreviews", group="authentication.k8s.io",
                                          namespace="")).level == MD


# ---- invalid policies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\n", "src: invalid audit policy: apiVersion: "),
        ("apiVersion: audit.k8s.io/v1\nkind: Pod\n", "src: invalid audit policy: kind: 'Pod' is not 'Policy'"),
        ("", "src: invalid audit policy: policy: empty document"),
        ("- 1\n", "src: invalid audit policy: : must be a mapping, not list"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]\n",
         "src: invalid audit policy: rules[0].level: unknown level 'Everything'"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{verbs: [get]}]\n",
         "src: invalid audit policy: rules[0].level: missing"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None}, {level: None, verb: [get]}]\n",
         "src: invalid audit policy: rules[1].verb: unknown key"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, users: alice}]\n",
         "src: invalid audit policy: rules[0].users: must be a list of strings, not str"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, users: [yes]}]\n",
         "src: invalid audit policy: rules[0].users[0]: must be a string, not bool"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, omitStages: [Done]}]\n",
         "src: invalid audit policy: rules[0].omitStages[0]: unknown stage 'Done'"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resources: [{group: apps/v1}]}]\n",
         "src: invalid audit policy: rules[0].resources[0].group: 'apps/v1' is not an API group name"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resources: [{resourceNames: [a]}]}]\n",
         "src: invalid audit policy: rules[0].resources[0].resourceNames: using resourceNames requires"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [healthz]}]\n",
         "src: invalid audit policy: rules[0].nonResourceURLs[0]: 'healthz' must begin with '/'"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: ['/a*/b']}]\n",
         "src: invalid audit policy: rules[0].nonResourceURLs[0]: '/a*/b': '*' may only be the final"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [/x], namespaces: [a]}]\n",
         "src: invalid audit policy: rules[0].nonResourceURLs: a rule cannot apply to both"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitManagedFields: sometimes\n",
         "src: invalid audit policy: omitManagedFields: must be true or false"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: {level: None}\n",
         "src: invalid audit policy: rules: must be a list, not dict"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [\n", "src: audit policy is not valid YAML: "),
    ],
)
def test_invalid_policy_is_rejected_with_a_message_naming_source_rule_and_field(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_policy(text, "src")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
