"""inventories/aws_ec2.yml, as is, against EC2 on a moto server: running
instances tagged with their ECS cluster are grouped by cluster."""
import json
import subprocess

import boto3

from conftest import AWS_TEST_ENV, ROOT, VENV_BIN, ansible_env

INVENTORY = ROOT / "inventories" / "aws_ec2.yml"


def plain(value):
    """ansible-inventory marks values from the plugin as unsafe in its JSON."""
    return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value


def launch(ec2, tags, count=1):
    spec = [{"ResourceType": "instance", "Tags": tags}] if tags else []
    reply = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count, TagSpecifications=spec)
    return sorted(i["InstanceId"] for i in reply["Instances"])


def test_instances_are_grouped_by_cluster_tag(moto):
    ec2 = boto3.client("ec2", endpoint_url=moto, region_name="us-east-1")
    prod = launch(ec2, [{"Key": "ecs:cluster", "Value": "prod-web"}, {"Key": "Name", "Value": "ecs"}], count=2)
    batch = launch(ec2, [{"Key": "ECSCluster", "Value": "batch"}])
    other = launch(ec2, [{"Key": "Name", "Value": "bastion"}])
    stopped = launch(ec2, [{"Key": "ecs:cluster", "Value": "prod-web"}])
    ec2.stop_instances(InstanceIds=stopped)

    env = ansible_env(AWS_URL=moto, **AWS_TEST_ENV)
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    inventory = json.loads(proc.stdout)

    assert sorted(inventory["ecs_cluster_prod_web"]["hosts"]) == prod
    assert sorted(inventory["ecs_cluster_batch"]["hosts"]) == batch
    assert sorted(inventory["ecs_hosts"]["hosts"]) == sorted(prod + batch)
    listed = set(inventory["_meta"]["hostvars"])
    assert not listed & set(other + stopped), "untagged and stopped instances must not be listed"
    described = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=prod)["Reservations"]
                 for i in r["Instances"]}
    for host in prod:
        hostvars = inventory["_meta"]["hostvars"][host]
        assert plain(hostvars["ansible_host"]) == described[host]["PrivateIpAddress"]
        assert plain(hostvars["ecs_cluster"]) == "prod-web"
    assert plain(inventory["_meta"]["hostvars"][batch[0]]["ecs_cluster"]) == "batch"
