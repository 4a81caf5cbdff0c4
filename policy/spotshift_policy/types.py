"""The type tokens (pulumi-gcp 10, azure-native 3) the baseline inspects."""

GCP_INSTANCE = "gcp:compute/instance:Instance"
GCP_TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
GCP_REGION_TEMPLATE = "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate"
GCP_VM_TYPES = (GCP_INSTANCE, GCP_TEMPLATE, GCP_REGION_TEMPLATE)
GCP_TEMPLATE_TYPES = (GCP_TEMPLATE, GCP_REGION_TEMPLATE)
GCP_FIREWALL = "gcp:compute/firewall:Firewall"
GCP_SUBNETWORK = "gcp:compute/subnetwork:Subnetwork"
GCP_BUCKET = "gcp:storage/bucket:Bucket"
GCP_BUCKET_IAM_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
GCP_BUCKET_IAM_BINDING = "gcp:storage/bucketIAMBinding:BucketIAMBinding"
GCP_BUCKET_IAM_POLICY = "gcp:storage/bucketIAMPolicy:BucketIAMPolicy"
GCP_FOLDER_IAM_MEMBER = "gcp:storage/managedFolderIamMember:ManagedFolderIamMember"
GCP_FOLDER_IAM_BINDING = "gcp:storage/managedFolderIamBinding:ManagedFolderIamBinding"
GCP_FOLDER_IAM_POLICY = "gcp:storage/managedFolderIamPolicy:ManagedFolderIamPolicy"
GCP_ACL_ENTITY_TYPES = (
    "gcp:storage/bucketAccessControl:BucketAccessControl",
    "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl",
    "gcp:storage/objectAccessControl:ObjectAccessControl",
)
GCP_ACL_LIST_TYPES = (
    "gcp:storage/bucketACL:BucketACL",
    "gcp:storage/defaultObjectACL:DefaultObjectACL",
    "gcp:storage/objectACL:ObjectACL",
)
#: IAM above a bucket: every grant here reaches every bucket of the project, folder or organization.
GCP_WIDE_IAM_MEMBER = (
    "gcp:projects/iAMMember:IAMMember",
    "gcp:folder/iAMMember:IAMMember",
    "gcp:organizations/iAMMember:IAMMember",
)
GCP_WIDE_IAM_BINDING = (
    "gcp:projects/iAMBinding:IAMBinding",
    "gcp:folder/iAMBinding:IAMBinding",
    "gcp:organizations/iAMBinding:IAMBinding",
)
GCP_WIDE_IAM_POLICY = (
    "gcp:projects/iAMPolicy:IAMPolicy",
    "gcp:folder/iAMPolicy:IAMPolicy",
    "gcp:organizations/iAMPolicy:IAMPolicy",
)

AZURE_VM = "azure-native:compute:VirtualMachine"
AZURE_VMSS = "azure-native:compute:VirtualMachineScaleSet"
AZURE_ACCOUNT = "azure-native:storage:StorageAccount"
AZURE_CONTAINER = "azure-native:storage:BlobContainer"
AZURE_BLOB_SERVICE = "azure-native:storage:BlobServiceProperties"
AZURE_NSG = "azure-native:network:NetworkSecurityGroup"
AZURE_NSG_RULE = "azure-native:network:SecurityRule"
AZURE_ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
