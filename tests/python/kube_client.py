"""Drives the official Python `kubernetes` client against every context of a kubeconfig.

Used by tests/tests/python_client.rs against the simulated fleet: for each context it asks for
the version, the discovery documents (/api, /apis, /api/v1, /apis/<group>, /apis/<group>/<version>),
every listed kind page by page (`limit` and `continue`), one namespace's pods, single objects, and
an object that does not exist, and prints what it got as one JSON document on stdout. Any
exception the client raises fails the run (exit 1, the traceback on stderr), except the expected 404.

usage: python kube_client.py KUBECONFIG PAGE_SIZE
"""

import json
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def paged(list_call, page_size, **kwargs):
    """Every item of a list, page by page; returns (items, pages)."""
    items, pages, token = [], 0, None
    while True:
        if token:
            page = list_call(limit=page_size, _continue=token, **kwargs)
        else:
            page = list_call(limit=page_size, **kwargs)
        pages += 1
        items.extend(page.items)
        token = page.metadata._continue
        if not token:
            return items, pages


def get(api, path, response_type):
    """GET a path with the client's own request and deserialization (for the group/versions
    that have no generated API class), as its generated `get_api_resources` methods do."""
    request = api.param_serialize(
        method="GET", resource_path=path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(*request)
    response.read()
    return api.response_deserialize(response_data=response, response_types_map={"200": response_type}).data


def identity(item):
    meta = item.metadata
    return [meta.namespace or "", meta.name, meta.uid]


def one_cluster(api, page_size):
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    batch = client.BatchV1Api(api)
    result = {}

    version = client.VersionApi(api).get_code()
    result["version"] = {"major": version.major, "minor": version.minor, "gitVersion": version.git_version}

    result["core_versions"] = client.CoreApi(api).get_api_versions().versions
    groups = client.ApisApi(api).get_api_versions().groups
    result["groups"] = {g.name: [v.group_version for v in g.versions] for g in groups}
    result["apps_group"] = client.AppsApi(api).get_api_group().name
    resources = {"v1": sorted(r.name for r in core.get_api_resources().resources)}
    for group in groups:
        for group_version in group.versions:
            listed = get(api, "/apis/" + group_version.group_version + "/", "V1APIResourceList")
            resources[listed.group_version] = sorted(r.name for r in listed.resources)
    result["resources"] = resources

    networking = client.NetworkingV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    storage = client.StorageV1Api(api)
    lists = {
        "pods": core.list_pod_for_all_namespaces,
        "nodes": core.list_node,
        "namespaces": core.list_namespace,
        "services": core.list_service_for_all_namespaces,
        "configmaps": core.list_config_map_for_all_namespaces,
        "secrets": core.list_secret_for_all_namespaces,
        "serviceaccounts": core.list_service_account_for_all_namespaces,
        "persistentvolumes": core.list_persistent_volume,
        "deployments": apps.list_deployment_for_all_namespaces,
        "daemonsets": apps.list_daemon_set_for_all_namespaces,
        "statefulsets": apps.list_stateful_set_for_all_namespaces,
        "replicasets": apps.list_replica_set_for_all_namespaces,
        "jobs": batch.list_job_for_all_namespaces,
        "cronjobs": batch.list_cron_job_for_all_namespaces,
        "ingresses": networking.list_ingress_for_all_namespaces,
        "clusterroles": rbac.list_cluster_role,
        "storageclasses": storage.list_storage_class,
    }
    result["lists"], result["pages"] = {}, {}
    for plural, call in lists.items():
        items, pages = paged(call, page_size)
        result["lists"][plural] = [identity(item) for item in items]
        result["pages"][plural] = pages

    pods = result["lists"]["pods"]
    namespace, name, _ = pods[0]
    items, _ = paged(core.list_namespaced_pod, page_size, namespace=namespace)
    result["namespace_pods"] = {"namespace": namespace, "pods": [identity(item) for item in items]}
    result["read_pod"] = identity(core.read_namespaced_pod(name, namespace))
    result["read_namespace"] = identity(core.read_namespace("kube-system"))
    try:
        core.read_namespaced_pod("no-such-pod", namespace)
        result["not_found"] = None
    except ApiException as err:
        body = json.loads(err.body)
        result["not_found"] = {key: body.get(key) for key in ["kind", "code", "reason", "details"]}
    return result


def main():
    kubeconfig, page_size = sys.argv[1], int(sys.argv[2])
    contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
    results = {}
    for context in contexts:
        api = config.new_client_from_config(config_file=kubeconfig, context=context["name"])
        with api:
            results[context["name"]] = one_cluster(api, page_size)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
